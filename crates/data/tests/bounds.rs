//! Hostile inputs: files that are not regular (FIFOs, devices, directories), too large, or not
//! images; input sizes out of range; a loader that must report every failure. Nothing here may
//! block, panic or exhaust memory; every error names the file.

use illama_data::decode::{read_image, ImageError, MAX_IMAGE_BYTES};
use illama_data::transform::{EvalTransform, MAX_INPUT_SIZE};
use illama_data::{
    eval_batches, Dataset, LoaderError, LoaderOptions, NoImages, OptionsError, Rgb8,
};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// Runs `f` on another thread and fails (instead of hanging) if it takes over 20 s.
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("{what} blocked (or panicked)"))
}

fn mkfifo(p: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

fn write_png(p: &Path, w: u32, h: u32) {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7 + y) as u8, 99, y as u8]));
    img.save_with_format(p, image::ImageFormat::Png).unwrap();
}

fn read_err(p: PathBuf) -> String {
    within("read_image", move || {
        read_image(&p).unwrap_err().to_string()
    })
}

#[test]
fn image_files_must_be_regular_small_images() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    // A link to /dev/zero: refused as a device, not read until memory runs out.
    let zero = p.join("zero.JPEG");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let e = read_err(zero);
    assert!(
        e.contains("zero.JPEG") && e.contains("character device"),
        "{e}"
    );
    // A FIFO named like an image: refused, never blocks.
    let fifo = p.join("x.JPEG");
    mkfifo(&fifo);
    let e = read_err(fifo);
    assert!(e.contains("x.JPEG") && e.contains("FIFO"), "{e}");
    // A directory named like an image.
    let dir = p.join("d.png");
    std::fs::create_dir(&dir).unwrap();
    let e = read_err(dir);
    assert!(e.contains("d.png") && e.contains("directory"), "{e}");
    // Larger than the bound: refused from its size (a sparse file: nothing is written).
    let big = p.join("big.png");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(MAX_IMAGE_BYTES + 1).unwrap();
    let e = read_err(big);
    assert!(
        e.contains("big.png") && e.contains(&format!("more than the {MAX_IMAGE_BYTES} bytes")),
        "{e}"
    );
    // Not an image by content, whatever the name.
    let text = p.join("t.jpg");
    std::fs::write(&text, b"hello, world").unwrap();
    let e = read_err(text);
    assert!(
        e.contains("t.jpg") && e.contains("not an image") && e.contains("68 65 6c"),
        "{e}"
    );
    let empty = p.join("e.jpg");
    std::fs::write(&empty, b"").unwrap();
    assert!(read_err(empty).contains("the file is empty"));
    // An image signature with a corrupt body: a decode error naming the file.
    let bad = p.join("bad.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\n\0\0\0\0garbage").unwrap();
    match read_image(&bad) {
        Err(e @ ImageError::Decode { .. }) => assert!(e.to_string().contains("bad.png"), "{e}"),
        other => panic!("{other:?}"),
    }
    // A real image still reads, by content, whatever its extension.
    let good = p.join("good.JPEG");
    write_png(&good, 5, 3);
    let img = read_image(&good).unwrap();
    assert_eq!((img.width, img.height), (5, 3));
}

#[test]
fn input_sizes_are_multiples_of_16_within_range() {
    for bad in [0usize, 8, 15, 17, 225, 1040, 65536, usize::MAX] {
        let e = EvalTransform::new(bad).unwrap_err().to_string();
        assert!(e.contains(&format!("input size {bad} ")), "{e}");
    }
    for good in [16usize, 224, 368, 384, MAX_INPUT_SIZE] {
        let t = EvalTransform::new(good).unwrap();
        let img = Rgb8 {
            width: 7,
            height: 3,
            data: vec![128; 7 * 3 * 3],
        };
        assert_eq!(t.apply(&img).unwrap().len(), 3 * good * good);
    }
    // A malformed image is an error, not a panic.
    let t = EvalTransform::new(224).unwrap();
    for (w, h, len) in [(0, 5, 0), (4, 4, 47), (4, 4, 49)] {
        let img = Rgb8 {
            width: w,
            height: h,
            data: vec![0; len],
        };
        assert!(t.pixels(&img).is_err(), "{w}x{h} with {len} bytes");
    }
}

/// An ImageFolder with one good image and, in class `b`, a FIFO named like an image.
fn folder_with_fifo() -> (tempfile::TempDir, Dataset) {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("a")).unwrap();
    std::fs::create_dir_all(d.path().join("b")).unwrap();
    write_png(&d.path().join("a/1.png"), 40, 30);
    mkfifo(&d.path().join("b/x.JPEG"));
    write_png(&d.path().join("b/y.png"), 30, 40);
    let root = d.path().to_path_buf();
    let ds = within("listing", move || Dataset::image_folder(&root).unwrap());
    assert_eq!(ds.samples.len(), 3);
    (d, ds)
}

fn opts(skip_bad: bool) -> LoaderOptions {
    LoaderOptions {
        batch_size: 2,
        workers: 2,
        skip_bad,
        limit: None,
        prefetch: 1,
    }
}

#[test]
fn a_fifo_in_the_dataset_is_an_error_naming_it_or_skipped() {
    let (_d, ds) = folder_with_fifo();
    let t = EvalTransform::new(32).unwrap();
    let ds2 = ds.clone();
    let got: Vec<_> = within("loader", move || {
        eval_batches(&ds2, t, opts(false)).unwrap().iter().collect()
    });
    // The first batch (a/1.png, b/x.JPEG) fails naming the FIFO; then the stream ends.
    assert_eq!(got.len(), 1);
    let err = got[0].as_ref().unwrap_err();
    assert!(matches!(err, LoaderError::Image(_)), "{err:?}");
    let e = err.to_string();
    assert!(e.contains("x.JPEG") && e.contains("FIFO"), "{e}");

    let got: Vec<_> = within("loader", move || {
        eval_batches(&ds, t, opts(true)).unwrap().iter().collect()
    });
    let batches: Vec<_> = got.into_iter().map(Result::unwrap).collect();
    let indices: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
    assert_eq!(indices, [0, 2]);
    let skipped: Vec<_> = batches.iter().flat_map(|b| b.skipped.clone()).collect();
    assert_eq!(skipped.len(), 1);
    assert!(skipped[0].0.ends_with("b/x.JPEG"));
    assert!(skipped[0].1.contains("FIFO"), "{}", skipped[0].1);
    assert_eq!(batches[0].pixels.len(), 3 * 32 * 32);
}

#[test]
fn nothing_to_load_and_bad_options_are_errors() {
    let (_d, ds) = folder_with_fifo();
    let t = EvalTransform::new(224).unwrap();
    let limit0 = LoaderOptions {
        limit: Some(0),
        ..opts(true)
    };
    assert!(matches!(
        eval_batches(&ds, t, limit0),
        Err(LoaderError::NoImages(NoImages::LimitZero))
    ));
    let mut empty = ds.clone();
    empty.samples.clear();
    match eval_batches(&empty, t, opts(true)) {
        Err(LoaderError::NoImages(NoImages::Empty { root })) => assert_eq!(root, ds.root),
        other => panic!("{:?}", other.err()),
    }
    // Each bad option is named, with the bound it broke (7,131 images of 224 px in 4 GiB).
    let max_batch = (4usize << 30) / (3 * 224 * 224 * 4);
    for (bad, want) in [
        (
            LoaderOptions {
                batch_size: 0,
                ..opts(true)
            },
            OptionsError::BatchSize {
                batch_size: 0,
                max: max_batch,
                input_size: 224,
            },
        ),
        (
            LoaderOptions {
                batch_size: usize::MAX,
                ..opts(true)
            },
            OptionsError::BatchSize {
                batch_size: usize::MAX,
                max: max_batch,
                input_size: 224,
            },
        ),
        (
            LoaderOptions {
                workers: usize::MAX,
                ..opts(true)
            },
            OptionsError::Workers {
                workers: usize::MAX,
                max: illama_data::loader::MAX_WORKERS,
            },
        ),
        (
            LoaderOptions {
                prefetch: usize::MAX,
                ..opts(true)
            },
            OptionsError::Prefetch {
                prefetch: usize::MAX,
                max: illama_data::loader::MAX_PREFETCH,
            },
        ),
    ] {
        match eval_batches(&ds, t, bad) {
            Err(LoaderError::Options(got)) => assert_eq!(got, want, "{bad:?}"),
            other => panic!("{bad:?}: {:?}", other.err()),
        }
    }
    let e = eval_batches(
        &ds,
        t,
        LoaderOptions {
            batch_size: 0,
            ..opts(true)
        },
    )
    .err()
    .unwrap();
    assert_eq!(
        e.to_string(),
        format!(
            "invalid loader options: batch size 0 is not between 1 and {max_batch} at input size 224 (4 GiB of pixels per batch at most)"
        )
    );
    // limit 1: exactly the first image.
    let one = LoaderOptions {
        limit: Some(1),
        ..opts(false)
    };
    let got: Vec<_> = eval_batches(&ds, t, one).unwrap().iter().collect();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].as_ref().unwrap().indices, [0]);
}
