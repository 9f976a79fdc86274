//! ImageNet layouts: torchvision's ImageFolder (`val/<wnid>/*.JPEG`) and the official flat
//! directory of `ILSVRC2012_val_*.JPEG` files with a labels file.
//!
//! Listing never opens a file: entries are only `stat`ed, so a FIFO or device named like an image
//! is listed and then refused, naming it, when the loader reads it. Links to directories are
//! followed, as torchvision does, but a link that leads back to a folder containing it is an
//! error naming it, and nesting deeper than [`MAX_DEPTH`] is refused. Folder and file names need
//! not be UTF-8: files are opened by their real names; [`Dataset::classes`] shows class folder
//! names lossily (labels are by position). Labels files are read whole up to [`MAX_LABELS_BYTES`].

use illama_formats::input::{read_text_bounded, InputError};
use rayon::prelude::*;
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Largest labels CSV or devkit synsets file read: 64 MiB (ImageNet's validation labels are
/// about 1.5 MB).
pub const MAX_LABELS_BYTES: u64 = 64 << 20;

/// Deepest folder nesting listed below a class folder (or the root).
pub const MAX_DEPTH: usize = 64;

/// The 1000 ImageNet-1k classes in the standard (sorted synset) order, with their names.
pub const IMAGENET_CLASSES_TSV: &str = include_str!("../assets/imagenet_classes.tsv");

/// `(wnid, name)` of the 1000 ImageNet-1k classes, index = class id.
pub fn imagenet_classes() -> Vec<(&'static str, &'static str)> {
    IMAGENET_CLASSES_TSV
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .collect()
}

/// torchvision's IMG_EXTENSIONS, compared case-insensitively.
const EXTENSIONS: [&str; 9] = [
    "jpg", "jpeg", "png", "ppm", "bmp", "pgm", "tif", "tiff", "webp",
];

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("{path}: a symbolic link leads back to {target}, a folder that contains it")]
    Cycle { path: PathBuf, target: PathBuf },
    #[error("{0}: folders nested more than {MAX_DEPTH} deep")]
    TooDeep(PathBuf),
    #[error("{0}: devkit ground truth (ILSVRC2012_IDs) needs the devkit's synset list (the 1000 wnids in ILSVRC2012_ID order, from its meta.mat), or use a file,wnid CSV")]
    DevkitSynsetsNeeded(PathBuf),
    #[error("{root}: {present} classes, but the model has {model}")]
    TooManyClasses {
        root: PathBuf,
        present: usize,
        model: usize,
    },
    #[error("{train} and {val} have different classes ({train_count} and {val_count}); only in the first: {only_train}; only in the second: {only_val}")]
    ClassesDiffer {
        train: PathBuf,
        val: PathBuf,
        train_count: usize,
        val_count: usize,
        /// A few of the differing names, comma-separated.
        only_train: String,
        only_val: String,
    },
    #[error("{0}")]
    Invalid(String),
}

type Result<T> = std::result::Result<T, DatasetError>;

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub path: PathBuf,
    pub label: usize,
}

#[derive(Debug, Clone)]
pub struct Dataset {
    pub root: PathBuf,
    /// Class names (wnids) by label.
    pub classes: Vec<String>,
    pub samples: Vec<Sample>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DatasetError + '_ {
    move |source| DatasetError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Whether `p` is, or links to, a directory (`stat`, which never blocks; a dangling or looping
/// link is not a directory).
fn is_dir_following(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_dir())
}

/// Image files under `dir`, recursively, in the order of `sorted(os.walk(...))`. `ancestors`
/// holds the (device, inode) of the folders above `dir`, to refuse link cycles.
fn walk(
    dir: &Path,
    ancestors: &mut Vec<(PathBuf, (u64, u64))>,
    out: &mut Vec<PathBuf>,
) -> Result<()> {
    let meta = std::fs::metadata(dir).map_err(io(dir))?;
    let id = (meta.dev(), meta.ino());
    if let Some((target, _)) = ancestors.iter().find(|(_, a)| *a == id) {
        return Err(DatasetError::Cycle {
            path: dir.to_path_buf(),
            target: target.clone(),
        });
    }
    if ancestors.len() > MAX_DEPTH {
        return Err(DatasetError::TooDeep(dir.to_path_buf()));
    }
    let mut entries: Vec<(OsString, PathBuf, bool)> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .map(|e| {
            let e = e.map_err(io(dir))?;
            let p = e.path();
            // The directory entry's type needs no system call; only links are followed.
            let is_dir = match e.file_type() {
                Ok(t) if t.is_symlink() => is_dir_following(&p),
                Ok(t) => t.is_dir(),
                Err(_) => is_dir_following(&p),
            };
            Ok((e.file_name(), p, is_dir))
        })
        .collect::<Result<_>>()?;
    // Byte order, which is code-point order for UTF-8 names (Python's sort).
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, p, is_dir) in &entries {
        if !is_dir && is_image(p) {
            out.push(p.clone());
        }
    }
    ancestors.push((dir.to_path_buf(), id));
    for (_, p, is_dir) in &entries {
        if *is_dir {
            walk(p, ancestors, out)?;
        }
    }
    ancestors.pop();
    Ok(())
}

impl Dataset {
    /// torchvision's ImageFolder: classes are the sorted sub-directory names.
    /// Class folder names need not be UTF-8 (they are shown lossily in `classes`).
    pub fn image_folder(root: &Path) -> Result<Dataset> {
        let root_meta = std::fs::metadata(root).map_err(io(root))?;
        let mut dirs: Vec<OsString> = Vec::new();
        for e in std::fs::read_dir(root).map_err(io(root))? {
            let e = e.map_err(io(root))?;
            if is_dir_following(&e.path()) {
                dirs.push(e.file_name());
            }
        }
        dirs.sort();
        let classes: Vec<String> = dirs
            .iter()
            .map(|d| d.to_string_lossy().into_owned())
            .collect();
        if classes.is_empty() {
            return Err(DatasetError::Invalid(format!(
                "{}: no class folders (expected <root>/<class>/<image>, or a flat folder with a labels file)",
                root.display()
            )));
        }
        // Class folders are listed in parallel (ImageNet train: 1000 folders, 1.28M files).
        let root_id = (root.to_path_buf(), (root_meta.dev(), root_meta.ino()));
        let per_class: Vec<Vec<PathBuf>> = dirs
            .par_iter()
            .map(|d| {
                let mut files = Vec::new();
                let dir = root.join(d);
                walk(&dir, &mut vec![root_id.clone()], &mut files)?;
                if files.is_empty() {
                    return Err(DatasetError::Invalid(format!(
                        "{}: class folder holds no images",
                        dir.display()
                    )));
                }
                Ok(files)
            })
            .collect::<Result<_>>()?;
        let mut samples = Vec::with_capacity(per_class.iter().map(Vec::len).sum());
        for (label, files) in per_class.into_iter().enumerate() {
            samples.extend(files.into_iter().map(|path| Sample { path, label }));
        }
        Ok(Dataset {
            root: root.to_path_buf(),
            classes,
            samples,
        })
    }

    /// Refuses a training set whose classes differ from the validation set's: the same label
    /// must mean the same class in both (ImageFolder labels are positions in the sorted list).
    pub fn check_same_classes(&self, val: &Dataset) -> Result<()> {
        if self.classes == val.classes {
            return Ok(());
        }
        let few = |a: &[String], b: &[String]| -> String {
            let only: Vec<&str> = a
                .iter()
                .filter(|c| !b.contains(c))
                .map(String::as_str)
                .collect();
            match only.len() {
                0 => "none".into(),
                n if n > 5 => format!("{}, ... ({n} in all)", only[..5].join(", ")),
                _ => only.join(", "),
            }
        };
        Err(DatasetError::ClassesDiffer {
            train: self.root.clone(),
            val: val.root.clone(),
            train_count: self.classes.len(),
            val_count: val.classes.len(),
            only_train: few(&self.classes, &val.classes),
            only_val: few(&val.classes, &self.classes),
        })
    }

    /// Re-labels an ImageFolder whose folder names all appear in `classes` (ImageNet wnids, say)
    /// by name instead of by folder position. With every class present the labels do not change;
    /// with a subset they become right. Returns false, changing nothing, if a folder is unknown.
    /// Gives the samples the labels a model with `model_classes` outputs expects, as `verify`
    /// needs: an ImageFolder of ImageNet wnids (all 1000 or a subset) is relabelled to the
    /// wnid's ImageNet index when the model has 1000 classes; otherwise the folder's own sorted
    /// order stands, and a folder with more classes than the model is refused. Returns notes
    /// worth showing (a subset of ImageNet).
    pub fn align_to_model(&mut self, model_classes: usize) -> Result<Vec<String>> {
        let imagenet: Vec<String> = crate::imagenet_classes()
            .iter()
            .map(|(w, _)| w.to_string())
            .collect();
        let present = self.classes.len();
        let mut notes = Vec::new();
        if model_classes == imagenet.len() && self.relabel_by_name(&imagenet) {
            if present != imagenet.len() {
                notes.push(format!(
                    "{present} of the {} ImageNet classes present; labels follow their wnids",
                    imagenet.len()
                ));
            }
        } else if present > model_classes {
            return Err(DatasetError::TooManyClasses {
                root: self.root.clone(),
                present,
                model: model_classes,
            });
        }
        Ok(notes)
    }

    pub fn relabel_by_name(&mut self, classes: &[String]) -> bool {
        let Some(remap) = self
            .classes
            .iter()
            .map(|c| classes.iter().position(|w| w == c))
            .collect::<Option<Vec<usize>>>()
        else {
            return false;
        };
        for s in &mut self.samples {
            s.label = remap[s.label];
        }
        self.classes = classes.to_vec();
        true
    }

    /// A flat folder of images with labels from a file: `file,wnid` CSV lines (a header line is
    /// skipped), Kaggle's `LOC_val_solution.csv` (the first word of the prediction string), or
    /// the devkit's ground truth (one ILSVRC2012_ID per line, in file-name order) together with
    /// `devkit_synsets`, the 1000 wnids in ILSVRC2012_ID order. Labels are indices into
    /// `classes` (the ImageNet-1k synsets in sorted order by default).
    pub fn flat(
        root: &Path,
        labels: &Path,
        classes: Vec<String>,
        devkit_synsets: Option<&Path>,
    ) -> Result<Dataset> {
        let mut files = Vec::new();
        for e in std::fs::read_dir(root).map_err(io(root))? {
            let p = e.map_err(io(root))?.path();
            if p.is_file() && is_image(&p) {
                files.push(p);
            }
        }
        files.sort();
        let text = read_text_bounded(labels, MAX_LABELS_BYTES, "labels file")?;
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let index_of = |wnid: &str| classes.iter().position(|c| c == wnid);
        let mut samples = Vec::with_capacity(files.len());
        if lines.iter().all(|l| l.parse::<usize>().is_ok()) {
            let Some(map) = devkit_synsets else {
                return Err(DatasetError::DevkitSynsetsNeeded(labels.to_path_buf()));
            };
            let order: Vec<String> = read_text_bounded(map, MAX_LABELS_BYTES, "synsets file")?
                .split_whitespace()
                .map(String::from)
                .collect();
            if lines.len() != files.len() {
                return Err(DatasetError::Invalid(format!(
                    "{}: {} labels for {} images",
                    labels.display(),
                    lines.len(),
                    files.len()
                )));
            }
            let ids = lines.iter().filter_map(|l| l.parse::<usize>().ok());
            for (path, id) in files.into_iter().zip(ids) {
                let wnid = order.get(id.wrapping_sub(1)).ok_or_else(|| {
                    DatasetError::Invalid(format!("ILSVRC2012_ID {id} is not in {}", map.display()))
                })?;
                let label = index_of(wnid).ok_or_else(|| {
                    DatasetError::Invalid(format!("class {wnid} is not among the model's classes"))
                })?;
                samples.push(Sample { path, label });
            }
        } else {
            let is_wnid = |w: &str| {
                w.len() == 9 && w.starts_with('n') && w[1..].chars().all(|c| c.is_ascii_digit())
            };
            let mut by_stem = std::collections::HashMap::new();
            for l in &lines {
                let Some((file, rest)) = l.split_once(',') else {
                    continue;
                };
                let wnid = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .trim_matches('"');
                if !is_wnid(wnid) {
                    continue; // a header line such as "ImageId,PredictionString"
                }
                let label = index_of(wnid).ok_or_else(|| {
                    DatasetError::Invalid(format!(
                        "{}: class {wnid} is not among the model's classes",
                        labels.display()
                    ))
                })?;
                let stem = Path::new(file.trim())
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                by_stem.insert(stem, label);
            }
            for path in files {
                let stem = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let label = *by_stem.get(&stem).ok_or_else(|| {
                    DatasetError::Invalid(format!(
                        "{}: no label for {}",
                        labels.display(),
                        path.display()
                    ))
                })?;
                samples.push(Sample { path, label });
            }
        }
        if samples.is_empty() {
            return Err(DatasetError::Invalid(format!(
                "{}: no images",
                root.display()
            )));
        }
        Ok(Dataset {
            root: root.to_path_buf(),
            classes,
            samples,
        })
    }
}
