//! Dataset layouts: ImageFolder ordering, flat folders with CSV or devkit labels.

use illama_data::Dataset;
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
    let e = Dataset::flat(&d.path().join("val"), &gt, classes.clone(), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("--devkit-synsets"), "{e}");
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
