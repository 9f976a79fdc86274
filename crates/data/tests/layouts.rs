//! Dataset layouts: ImageFolder ordering, flat folders with CSV or devkit labels.

use illama_data::{Dataset, DatasetError};
use std::path::Path;

fn touch(p: &Path) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, b"x").unwrap();
}

#[test]
fn image_folder_sorts_classes_and_files_and_filters_extensions() {
    let d = tempfile::tempdir().unwrap();
    for f in [
        "b/2.JPEG",
        "b/1.png",
        "b/sub/0.jpg",
        "a/z.jpeg",
        "a/notes.txt",
        "c/x.webp",
    ] {
        touch(&d.path().join(f));
    }
    let ds = Dataset::image_folder(d.path()).unwrap();
    assert_eq!(ds.classes, ["a", "b", "c"]);
    let got: Vec<(String, usize)> = ds
        .samples
        .iter()
        .map(|s| {
            (
                s.path
                    .strip_prefix(d.path())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                s.label,
            )
        })
        .collect();
    let want = [
        ("a/z.jpeg", 0),
        ("b/1.png", 1),
        ("b/2.JPEG", 1),
        ("b/sub/0.jpg", 1),
        ("c/x.webp", 2),
    ];
    assert_eq!(got, want.map(|(p, l)| (p.to_string(), l)));

    // A subset of a larger class list: labels by name.
    let mut sub = ds.clone();
    let all: Vec<String> = ["0", "a", "b", "x", "c"].map(String::from).to_vec();
    assert!(sub.relabel_by_name(&all));
    assert_eq!(
        sub.samples.iter().map(|s| s.label).collect::<Vec<_>>(),
        [1, 2, 2, 2, 4]
    );
    let mut unknown = ds.clone();
    assert!(!unknown.relabel_by_name(&all[..3]));
    assert_eq!(unknown.samples, ds.samples);

    // Aligning to a model: three non-ImageNet classes keep their order for a 3- or 10-class
    // model, and are refused by a 2-class one.
    let mut three = ds.clone();
    assert!(three.align_to_model(3).unwrap().is_empty());
    assert_eq!(three.samples, ds.samples);
    assert!(ds.clone().align_to_model(10).is_ok());
    let err = ds.clone().align_to_model(2).unwrap_err().to_string();
    assert!(err.contains("3 classes, but the model has 2"), "{err}");
}

#[test]
fn imagenet_wnid_folders_take_their_imagenet_index_for_a_1000_class_model() {
    let dir = tempfile::tempdir().unwrap();
    // Two ImageNet classes: folder labels 0 and 1, ImageNet indices 1 and 999.
    for wnid in ["n01443537", "n15075141"] {
        let d = dir.path().join(wnid);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("a.png"), b"").unwrap();
    }
    let mut ds = Dataset::image_folder(dir.path()).unwrap();
    assert_eq!(
        ds.samples.iter().map(|s| s.label).collect::<Vec<_>>(),
        [0, 1]
    );
    let notes = ds.align_to_model(1000).unwrap();
    assert_eq!(
        ds.samples.iter().map(|s| s.label).collect::<Vec<_>>(),
        [1, 999]
    );
    assert_eq!(ds.classes.len(), 1000);
    assert!(
        notes[0].contains("2 of the 1000 ImageNet classes"),
        "{notes:?}"
    );
}

#[test]
fn flat_folder_with_csv_or_devkit_labels() {
    let d = tempfile::tempdir().unwrap();
    for i in 1..=3 {
        touch(&d.path().join(format!("val/ILSVRC2012_val_{i:08}.JPEG")));
    }
    let classes: Vec<String> = ["n01440764", "n01443537", "n01484850"]
        .map(String::from)
        .to_vec();
    let csv = d.path().join("labels.csv");
    std::fs::write(&csv, "ImageId,PredictionString\nILSVRC2012_val_00000002,n01484850 1 2 3 4\nILSVRC2012_val_00000001,n01440764\nILSVRC2012_val_00000003,n01443537\n").unwrap();
    let ds = Dataset::flat(&d.path().join("val"), &csv, classes.clone(), None).unwrap();
    assert_eq!(
        ds.samples.iter().map(|s| s.label).collect::<Vec<_>>(),
        [0, 2, 1]
    );

    // Devkit ground truth: ILSVRC2012_IDs, mapped through the devkit's own synset order.
    let gt = d.path().join("ILSVRC2012_validation_ground_truth.txt");
    std::fs::write(&gt, "3\n1\n2\n").unwrap();
    let e = Dataset::flat(&d.path().join("val"), &gt, classes.clone(), None).unwrap_err();
    assert!(matches!(e, DatasetError::DevkitSynsetsNeeded(_)), "{e}");
    assert!(e.to_string().contains("synset list"), "{e}");
    let order = d.path().join("devkit_synsets.txt");
    std::fs::write(&order, "n01484850\nn01440764\nn01443537\n").unwrap();
    let ds = Dataset::flat(&d.path().join("val"), &gt, classes.clone(), Some(&order)).unwrap();
    // IDs 3, 1, 2 -> n01443537, n01484850, n01440764 -> sorted-class labels 1, 2, 0.
    assert_eq!(
        ds.samples.iter().map(|s| s.label).collect::<Vec<_>>(),
        [1, 2, 0]
    );

    std::fs::write(&csv, "ILSVRC2012_val_00000001,n09999999\n").unwrap();
    let e = Dataset::flat(&d.path().join("val"), &csv, classes, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("n09999999"), "{e}");
}

/// Runs `f` on another thread and fails (instead of hanging) if it takes over 20 s.
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("{what} blocked (or panicked)"))
}

#[test]
fn class_folders_need_not_be_utf8() {
    use std::os::unix::ffi::OsStrExt;
    let d = tempfile::tempdir().unwrap();
    let bad = std::ffi::OsStr::from_bytes(b"n\xff\xfeclass");
    touch(&d.path().join(bad).join("1.JPEG"));
    touch(&d.path().join("a/2.JPEG"));
    let ds = Dataset::image_folder(d.path()).unwrap();
    assert_eq!(ds.classes, ["a", "n\u{fffd}\u{fffd}class"]);
    assert_eq!(ds.samples.len(), 2);
    assert_eq!(ds.samples[1].label, 1);
    // The sample's path is the real (non-UTF-8) one: it exists.
    assert!(
        ds.samples[1].path.exists(),
        "{}",
        ds.samples[1].path.display()
    );
}

#[test]
fn link_cycles_and_fifos_do_not_hang_the_listing() {
    let d = tempfile::tempdir().unwrap();
    touch(&d.path().join("a/1.JPEG"));
    // a/loop -> a: following it would never end.
    std::os::unix::fs::symlink(d.path().join("a"), d.path().join("a/loop")).unwrap();
    let root = d.path().to_path_buf();
    let e = within("listing", move || {
        Dataset::image_folder(&root).unwrap_err().to_string()
    });
    assert!(e.contains("a/loop") && e.contains("leads back to"), "{e}");
    std::fs::remove_file(d.path().join("a/loop")).unwrap();
    // A link that loops on itself, and a FIFO: listed without blocking (a FIFO named like an
    // image is refused when read, naming it).
    std::os::unix::fs::symlink("self.JPEG", d.path().join("a/self.JPEG")).unwrap();
    let fifo = d.path().join("a/f.JPEG");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let root = d.path().to_path_buf();
    let ds = within("listing", move || Dataset::image_folder(&root).unwrap());
    assert_eq!(ds.samples.len(), 3);
}

#[test]
fn labels_files_are_bounded_and_regular() {
    let d = tempfile::tempdir().unwrap();
    touch(&d.path().join("val/ILSVRC2012_val_00000001.JPEG"));
    let classes = vec!["n01440764".to_string()];
    let zero = d.path().join("labels.csv");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let (val, c) = (d.path().join("val"), classes.clone());
    let e = within("labels", move || {
        Dataset::flat(&val, &zero, c, None).unwrap_err().to_string()
    });
    assert!(
        e.contains("labels.csv") && e.contains("character device"),
        "{e}"
    );
    let big = d.path().join("big.csv");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(illama_data::dataset::MAX_LABELS_BYTES + 1)
        .unwrap();
    let e = Dataset::flat(&d.path().join("val"), &big, classes.clone(), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("big.csv") && e.contains("labels file"), "{e}");
    // The devkit synsets file too.
    let gt = d.path().join("gt.txt");
    std::fs::write(&gt, "1\n").unwrap();
    let e = Dataset::flat(&d.path().join("val"), &gt, classes, Some(&big))
        .unwrap_err()
        .to_string();
    assert!(e.contains("big.csv") && e.contains("synsets file"), "{e}");
}

#[test]
fn train_and_val_must_have_the_same_classes() {
    let d = tempfile::tempdir().unwrap();
    for f in [
        "train/n01/a.JPEG",
        "train/n02/b.JPEG",
        "train/n03/c.JPEG",
        "val/n01/a.JPEG",
        "val/n02/b.JPEG",
        "val2/n01/a.JPEG",
        "val2/n03/c.JPEG",
        "val2/n04/d.JPEG",
    ] {
        touch(&d.path().join(f));
    }
    let train = Dataset::image_folder(&d.path().join("train")).unwrap();
    let same = Dataset::image_folder(&d.path().join("train")).unwrap();
    train.check_same_classes(&same).unwrap();
    let val = Dataset::image_folder(&d.path().join("val")).unwrap();
    let e = train.check_same_classes(&val).unwrap_err().to_string();
    assert!(
        e.contains("(3 and 2)") && e.contains("first: n03;") && e.contains("second: none"),
        "{e}"
    );
    let val2 = Dataset::image_folder(&d.path().join("val2")).unwrap();
    let e = train.check_same_classes(&val2).unwrap_err().to_string();
    assert!(
        e.contains("first: n02;") && e.contains("second: n04"),
        "{e}"
    );
}
