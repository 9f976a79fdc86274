//! ImageNet layouts: torchvision's ImageFolder (`val/<wnid>/*.JPEG`) and the official flat
//! directory of `ILSVRC2012_val_*.JPEG` files with a labels file.

use std::path::{Path, PathBuf};

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

/// Image files under `dir`, recursively, in the order of `sorted(os.walk(...))`.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<(String, PathBuf, bool)> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .map(|e| {
            let e = e.map_err(io(dir))?;
            let p = e.path();
            let is_dir = p.is_dir();
            Ok((e.file_name().to_string_lossy().into_owned(), p, is_dir))
        })
        .collect::<Result<_>>()?;
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, p, is_dir) in &entries {
        if !is_dir && is_image(p) {
            out.push(p.clone());
        }
    }
    for (_, p, is_dir) in &entries {
        if *is_dir {
            walk(p, out)?;
        }
    }
    Ok(())
}

impl Dataset {
    /// torchvision's ImageFolder: classes are the sorted sub-directory names.
    pub fn image_folder(root: &Path) -> Result<Dataset> {
        let mut classes: Vec<String> = std::fs::read_dir(root)
            .map_err(io(root))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        classes.sort();
        if classes.is_empty() {
            return Err(DatasetError::Invalid(format!(
                "{}: no class folders (expected <root>/<class>/<image>, or a flat folder with --labels)",
                root.display()
            )));
        }
        let mut samples = Vec::new();
        for (label, c) in classes.iter().enumerate() {
            let mut files = Vec::new();
            walk(&root.join(c), &mut files)?;
            if files.is_empty() {
                return Err(DatasetError::Invalid(format!(
                    "{}: class folder '{c}' holds no images",
                    root.display()
                )));
            }
            samples.extend(files.into_iter().map(|path| Sample { path, label }));
        }
        Ok(Dataset {
            root: root.to_path_buf(),
            classes,
            samples,
        })
    }

    /// Re-labels an ImageFolder whose folder names all appear in `classes` (ImageNet wnids, say)
    /// by name instead of by folder position. With every class present the labels do not change;
    /// with a subset they become right. Returns false, changing nothing, if a folder is unknown.
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
        let text = std::fs::read_to_string(labels).map_err(io(labels))?;
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let index_of = |wnid: &str| classes.iter().position(|c| c == wnid);
        let mut samples = Vec::with_capacity(files.len());
        if lines.iter().all(|l| l.parse::<usize>().is_ok()) {
            let Some(map) = devkit_synsets else {
                return Err(DatasetError::Invalid(format!(
                    "{}: devkit ground truth (ILSVRC2012_IDs) needs --devkit-synsets, the 1000 wnids in ILSVRC2012_ID order (from the devkit's meta.mat), or use a file,wnid CSV",
                    labels.display()
                )));
            };
            let order: Vec<String> = std::fs::read_to_string(map)
                .map_err(io(map))?
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
            for (path, l) in files.into_iter().zip(lines) {
                let id: usize = l.parse().expect("checked");
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
