//! The output policy and input checks, end to end, as a hostile or tired user meets them: no
//! output ever destroys an input or a file this tool did not write; special files are refused;
//! interrupted runs leave nothing behind; bad numbers are refused before any work.

mod common;

use common::{bin, fixture, run_capped, MIB};
use std::path::{Path, PathBuf};
use std::process::Output;

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("binary runs")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_fails_with(o: &Output, want: &str) {
    assert_eq!(o.status.code(), Some(1), "{}", stderr(o));
    assert!(stderr(o).contains(want), "want '{want}' in: {}", stderr(o));
}

/// Every file under `dir` with its bytes, to show that nothing changed.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(s(path)).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

fn partials(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().ok())
        .filter(|n| n.starts_with(".illama-tools-") && n.ends_with(".partial"))
        .collect()
}

#[test]
fn sharded_convert_never_deletes_inputs_or_foreign_files() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = dir.path().join("llama");
    copy_dir(&fixture("selection/llama_hf_safetensors"), &teacher);
    let before = snapshot(&teacher);

    // -o the input's own folder, with --force: refused, nothing touched.
    let o = run(&[
        "convert",
        s(&teacher),
        "-o",
        s(&teacher),
        "--max-shard-size",
        "20KB",
        "--force",
    ]);
    assert_fails_with(&o, "an input of this command");
    assert_eq!(snapshot(&teacher), before);

    // An existing directory with files of the user's: --force writes the shard set beside them.
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("config.json"), b"{\"user\": 1}").unwrap();
    std::fs::write(out.join("notes.txt"), b"mine").unwrap();
    let o = run(&["convert", s(&teacher), "-o", s(&out), "--to", "pth"]);
    assert_fails_with(&o, "--force");
    let args = [
        "convert",
        s(&teacher),
        "-o",
        s(&out),
        "--to",
        "pth",
        "--force",
    ];
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(out.join("notes.txt")).unwrap(), b"mine");
    assert_eq!(
        std::fs::read(out.join("config.json")).unwrap(),
        b"{\"user\": 1}"
    );
    let shards = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("pytorch_model"))
            .collect();
        v.sort();
        v
    };
    assert_eq!(shards(&out).len(), 5, "{:?}", shards(&out)); // 4 shards and the index
                                                             // Again with fewer shards: the earlier set of this tool is replaced, the user's files stay.
    let o = run(&[
        "convert",
        s(&teacher),
        "-o",
        s(&out),
        "--to",
        "pth",
        "--max-shard-size",
        "10GB",
        "--force",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(shards(&out), ["pytorch_model.bin"]);
    assert_eq!(std::fs::read(out.join("notes.txt")).unwrap(), b"mine");
    // A file of the shard set's name that this tool did not write is refused, and kept.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("pytorch_model.bin"), b"someone else's").unwrap();
    let o = run(&[
        "convert",
        s(&teacher),
        "-o",
        s(&other),
        "--to",
        "pth",
        "--max-shard-size",
        "10GB",
        "--force",
    ]);
    assert_fails_with(&o, "not written by this tool");
    assert_eq!(
        std::fs::read(other.join("pytorch_model.bin")).unwrap(),
        b"someone else's"
    );
    assert_eq!(snapshot(&teacher), before);
    assert!(partials(dir.path()).is_empty());
}

#[test]
fn outputs_that_are_inputs_are_refused_by_every_writer() {
    let dir = tempfile::tempdir().unwrap();
    // select -o a teacher shard (Hugging Face) or Meta's consolidated.00.pth.
    let hf = dir.path().join("hf");
    copy_dir(&fixture("selection/llama_hf_safetensors"), &hf);
    let meta = dir.path().join("meta");
    copy_dir(&fixture("selection/llama_meta_mp1"), &meta);
    let custom = [
        "--to", "custom", "--dim", "48", "--depth", "2", "--heads", "2",
    ];
    for (teacher, victim) in [
        (&hf, hf.join("model-00002-of-00004.safetensors")),
        (&hf, hf.join("model.safetensors.index.json")),
        (&meta, meta.join("consolidated.00.pth")),
    ] {
        let before = snapshot(teacher);
        let mut args = vec!["select", "--from", s(teacher), "-o", s(&victim), "--force"];
        args.extend(custom);
        assert_fails_with(&run(&args), "is an input");
        assert_eq!(&snapshot(teacher), &before);
    }
    // Through a symlink too.
    let link = dir.path().join("link.safetensors");
    std::os::unix::fs::symlink(hf.join("model-00001-of-00004.safetensors"), &link).unwrap();
    let mut args = vec!["select", "--from", s(&hf), "-o", s(&link), "--force"];
    args.extend(custom);
    assert_fails_with(&run(&args), "is an input");

    // logits --output = --input or --weights.
    let weights = dir.path().join("w.safetensors");
    std::fs::copy(fixture("model/custom.safetensors"), &weights).unwrap();
    let input = dir.path().join("x.safetensors");
    std::fs::copy(fixture("model/custom_cases.safetensors"), &input).unwrap();
    let before = snapshot(dir.path());
    for victim in [&input, &weights] {
        let o = run(&[
            "logits",
            "--weights",
            s(&weights),
            "--input",
            s(&input),
            "--output",
            s(victim),
            "--force",
        ]);
        assert_fails_with(&o, "is an input");
    }
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn special_files_and_directories_are_never_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.safetensors");
    mkfifo(&fifo);
    let input = fixture("formats/state_dict.pth");
    for (out, want) in [
        (fifo.as_path(), "FIFO"),
        (Path::new("/dev/null"), "character device"),
        (dir.path(), "is a directory"),
    ] {
        let o = run(&["convert", s(&input), "-o", s(out), "--force"]);
        assert_fails_with(&o, want);
    }
    let meta = std::fs::metadata("/dev/null").unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &meta.file_type()
    ));
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(
        &std::fs::symlink_metadata(&fifo).unwrap().file_type()
    ));
}

#[test]
fn a_fifo_or_device_as_input_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("model.pth");
    mkfifo(&fifo);
    let zero = dir.path().join("zero.safetensors");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let index = dir.path().join("model.safetensors.index.json");
    std::os::unix::fs::symlink("/dev/zero", &index).unwrap();
    for args in [
        vec!["inspect", s(&fifo)],
        vec!["inspect", s(&zero)],
        vec!["inspect", s(&index)],
        vec!["convert", s(&fifo), "-o", "/nonexistent/x.safetensors"],
    ] {
        let r = run_capped(&args, 1024 * MIB, 20);
        assert!(r.failed_cleanly(), "{args:?}: {r:?}");
        assert!(
            r.stderr.contains("not a regular file"),
            "{args:?}: {}",
            r.stderr
        );
        assert!(r.max_rss < 64 * MIB, "{args:?}: {} bytes", r.max_rss);
    }
}

#[test]
fn hostile_checkpoints_cost_bounded_memory_and_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.safetensors");
    for (file, want) in [
        ("memo_reuse_1000.pth", "through shared references"),
        ("memo_reuse_100k.pth", "through shared references"),
        ("stride0_16384x32768.pth", "repeats elements"),
        ("stride0_2p20x2p20.pth", "repeats elements"),
        ("duplicate_entry.pth", "occurs twice"),
        ("bigint_size.pth", "wider than 64 bits"),
        ("long_text_2mb.pth", "is not a 64-bit integer"),
    ] {
        let input = fixture("hostile").join(file);
        for args in [
            vec!["inspect", s(&input)],
            vec!["convert", s(&input), "-o", s(&out)],
        ] {
            let r = run_capped(&args, 1024 * MIB, 60);
            assert!(r.failed_cleanly(), "{args:?}: {r:?}");
            assert!(r.stderr.contains(want), "{args:?}: {}", r.stderr);
            assert!(
                r.stderr.len() < 1024,
                "{args:?}: {} bytes of stderr",
                r.stderr.len()
            );
            assert!(
                r.max_rss < 200 * MIB,
                "{args:?}: peak {} MiB",
                r.max_rss / MIB
            );
            assert!(!out.exists() && partials(dir.path()).is_empty());
        }
    }
    // A compressed entry that inflates 1000-fold is streamed, not held.
    let bomb = fixture("hostile/deflate_bomb.pth");
    let r = run_capped(&["convert", s(&bomb), "-o", s(&out)], 1024 * MIB, 60);
    assert!(r.succeeded(), "{r:?}");
    assert!(r.max_rss < 100 * MIB, "peak {} MiB", r.max_rss / MIB);
    assert!(std::fs::metadata(&out).unwrap().len() > 256 << 20);
}

#[test]
fn verify_dump_needs_force_and_never_lands_in_the_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let existing = dir.path().join("inputs.safetensors");
    std::fs::write(&existing, b"keep").unwrap();
    let val = fixture("images/val");
    let weights = fixture("model/tiny.safetensors");
    let base = [
        "verify",
        "--imagenet",
        s(&val),
        "--weights",
        s(&weights),
        "--limit",
        "2",
        "--batch-size",
        "2",
    ];
    let mut args = base.to_vec();
    args.extend(["--dump-inputs", s(&existing)]);
    assert_fails_with(&run(&args), "--force");
    assert_eq!(std::fs::read(&existing).unwrap(), b"keep");
    args.push("--force");
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let store = illama_formats::TensorStore::open(&existing).unwrap();
    assert_eq!(store.require("pixel_values").unwrap().shape[0], 2);

    let inside = val.join("dump.safetensors");
    let mut args = base.to_vec();
    args.extend(["--dump-inputs", s(&inside)]);
    assert_fails_with(&run(&args), "inside the dataset");
    assert!(!inside.exists());
}

#[test]
fn bad_sizes_and_rates_are_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let val = fixture("images/val");
    let w = fixture("model/tiny.safetensors");
    let img = std::fs::read_dir(
        val.join(
            std::fs::read_dir(&val)
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .file_name(),
        ),
    )
    .unwrap()
    .next()
    .unwrap()
    .unwrap()
    .path();
    let verify = |extra: &[&'static str]| -> Vec<String> {
        let mut v: Vec<String> = ["verify", "--imagenet", s(&val), "--weights", s(&w)]
            .map(String::from)
            .to_vec();
        v.extend(extra.iter().map(|x| x.to_string()));
        v
    };
    let predict = |extra: &[&'static str]| -> Vec<String> {
        let mut v: Vec<String> = ["predict", s(&img), "--weights", s(&w)]
            .map(String::from)
            .to_vec();
        v.extend(extra.iter().map(|x| x.to_string()));
        v
    };
    for (args, want) in [
        (verify(&["--input-size", "0"]), "multiple of 16"),
        (verify(&["--input-size", "65536"]), "multiple of 16"),
        (verify(&["--input-size", "225"]), "multiple of 16"),
        (verify(&["--limit", "0"]), "at least 1"),
        (verify(&["--batch-size", "0"]), "at least 1"),
        (predict(&["--input-size", "0"]), "multiple of 16"),
        (predict(&["--topk", "0"]), "at least 1"),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = run(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
    }
    let input = fixture("model/custom_cases.safetensors");
    let wc = fixture("model/custom.safetensors");
    let out = dir.path().join("l.safetensors");
    for rate in ["NaN", "inf", "-1", "2", "x"] {
        let o = run(&[
            "logits",
            "--weights",
            s(&wc),
            "--input",
            s(&input),
            "--output",
            s(&out),
            &format!("--soft-mask-rate={rate}"),
        ]);
        assert_eq!(o.status.code(), Some(2), "{rate}: {}", stderr(&o));
    }
    // Empty and zero-batch pixel_values.
    for shape in [[1usize, 3, 0, 0], [0, 3, 64, 64]] {
        let x = dir.path().join("x.safetensors");
        write_f32_safetensors(&x, "pixel_values", &shape);
        let o = run(&[
            "logits",
            "--weights",
            s(&wc),
            "--input",
            s(&x),
            "--output",
            s(&out),
        ]);
        assert_fails_with(&o, "expected [B, 3, S, S]");
    }
    assert!(!out.exists());
}

/// A safetensors file of one zero-filled f32 tensor.
fn write_f32_safetensors(path: &Path, name: &str, shape: &[usize]) {
    let n: usize = shape.iter().product();
    let header = format!(
        "{{\"{name}\":{{\"dtype\":\"F32\",\"shape\":{shape:?},\"data_offsets\":[0,{}]}}}}",
        n * 4
    );
    let mut header = header.into_bytes();
    while header.len() % 8 != 0 {
        header.push(b' ');
    }
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&header);
    bytes.resize(bytes.len() + n * 4, 0);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn interrupted_runs_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    // A large, sparse input: long enough to convert that the signal arrives mid-write.
    let input = dir.path().join("big.safetensors");
    let n = 512usize << 20; // elements: 2 GiB of f32
    let header = format!(
        "{{\"w\":{{\"dtype\":\"F32\",\"shape\":[{n}],\"data_offsets\":[0,{}]}}}}",
        n * 4
    );
    let mut head = (header.len() as u64).to_le_bytes().to_vec();
    head.extend_from_slice(header.as_bytes());
    std::fs::write(&input, &head).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&input)
        .unwrap();
    f.set_len((head.len() + n * 4) as u64).unwrap();
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    // A temporary that a run killed outright left: removed by the next run, which says so.
    let stale = out_dir.join(".illama-tools-2147483647-abcdef.partial");
    std::fs::write(&stale, b"half").unwrap();

    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        let out = out_dir.join("big.pth");
        let mut child = bin()
            .args(["convert", s(&input), "-o", s(&out)])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let t0 = std::time::Instant::now();
        while partials(&out_dir).iter().all(|p| p.contains("2147483647")) || stale.exists() {
            assert!(t0.elapsed().as_secs() < 30, "no temporary appeared");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
        let status = child.wait().unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(signal),
            "{status:?} {err}"
        );
        assert!(partials(&out_dir).is_empty(), "{:?}", partials(&out_dir));
        assert!(!out.exists());
        assert!(err.contains("removed the unfinished"), "{err}");
        if signal == libc::SIGINT {
            assert!(err.contains("left by an interrupted run"), "{err}");
        }
    }
}

#[test]
fn select_reports_every_shard_and_never_follows_a_hub_ref_outside_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let custom = [
        "--to", "custom", "--dim", "48", "--depth", "2", "--heads", "2",
    ];
    let teacher = fixture("selection/llama_hf_safetensors");
    let out = dir.path().join("ws.safetensors");
    let mut args = vec!["select", "--from", s(&teacher), "-o", s(&out), "--json"];
    args.extend(custom);
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["teacher"]["shards"], 4);

    // refs/main pointing above the cache: refused, not followed.
    let hf_home = dir.path().join("hf");
    let repo = hf_home.join("hub/models--meta-llama--Llama-2-7b-hf");
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::create_dir_all(repo.join("snapshots")).unwrap();
    std::fs::write(repo.join("refs/main"), "../../../../..").unwrap();
    let mut args = vec!["select", "--from", "llama2-7b", "-o", s(&out), "--force"];
    args.extend(custom);
    let o = bin()
        .args(&args)
        .env("HF_HOME", &hf_home)
        .env_remove("HF_HUB_CACHE")
        .output()
        .unwrap();
    assert_fails_with(&o, "is not a revision hash");
}

#[test]
fn inspect_escapes_names_that_would_drive_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("evil.safetensors");
    write_f32_safetensors(&p, "w\\u001b[2J\\u001b]0;pwned\\u0007", &[2]);
    let o = run(&["inspect", s(&p)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}'),
        "{text:?}"
    );
    assert!(text.contains("w\\u{1b}[2J"), "{text}");
}

/// A copy of the fixture val set in `dir`, with `extra` files added to its first class.
fn val_copy(dir: &Path) -> PathBuf {
    let val = dir.join("val");
    for class in std::fs::read_dir(fixture("images/val")).unwrap() {
        let class = class.unwrap();
        copy_dir(&class.path(), &val.join(class.file_name()));
    }
    val
}

#[test]
fn hostile_images_cost_bounded_memory_and_never_block() {
    let dir = tempfile::tempdir().unwrap();
    let weights = fixture("model/tiny.safetensors");
    // 1 x 89000 and 89000 x 1 PNGs: a few hundred bytes that resize to 256 x 22,784,000.
    let tall = dir.path().join("tall.png");
    image::GrayImage::from_pixel(1, 89_000, image::Luma([128]))
        .save(&tall)
        .unwrap();
    let wide = dir.path().join("wide.png");
    image::GrayImage::from_pixel(89_000, 1, image::Luma([128]))
        .save(&wide)
        .unwrap();
    let zero = dir.path().join("zero.jpg");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let big = dir.path().join("big.jpg");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(300 << 20)
        .unwrap();
    for img in [&tall, &wide] {
        let r = run_capped(
            &["predict", s(img), "--weights", s(&weights), "--json"],
            2048 * MIB,
            60,
        );
        assert!(r.succeeded(), "{r:?}");
        assert!(
            r.max_rss < 200 * MIB,
            "{}: peak {} MiB",
            img.display(),
            r.max_rss / MIB
        );
    }
    for (img, want) in [(&zero, "not a regular file"), (&big, "more than")] {
        let r = run_capped(
            &["predict", s(img), "--weights", s(&weights)],
            2048 * MIB,
            60,
        );
        assert!(r.failed_cleanly(), "{r:?}");
        assert!(r.stderr.contains(want), "{}", r.stderr);
        assert!(
            r.max_rss < 200 * MIB,
            "{}: peak {} MiB",
            img.display(),
            r.max_rss / MIB
        );
    }

    // verify: a FIFO named like a photo stops the run naming it, or is skipped with --skip-bad;
    // it never blocks. The same for the hostile images, with every worker busy.
    let val = val_copy(dir.path());
    let class = std::fs::read_dir(&val)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let fifo = class.join("fifo.JPEG");
    mkfifo(&fifo);
    let base = [
        "verify",
        "--imagenet",
        s(&val),
        "--weights",
        s(&weights),
        "--json",
    ];
    let r = run_capped(&base, 2048 * MIB, 60);
    assert!(r.failed_cleanly(), "{r:?}");
    assert!(r.stderr.contains("fifo.JPEG"), "{}", r.stderr);
    std::fs::copy(&tall, class.join("tall.JPEG")).unwrap();
    std::fs::copy(&wide, class.join("wide.JPEG")).unwrap();
    let mut args = base.to_vec();
    args.extend(["--skip-bad", "--workers", "2"]);
    let r = run_capped(&args, 2048 * MIB, 60);
    assert!(r.succeeded(), "{r:?}");
    assert!(r.max_rss < 300 * MIB, "peak {} MiB", r.max_rss / MIB);
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let unreadable = report["unreadable"].as_array().unwrap();
    assert_eq!(unreadable.len(), 1, "{unreadable:?}");
    assert!(unreadable[0]["file"]
        .as_str()
        .unwrap()
        .ends_with("fifo.JPEG"));
}

#[test]
fn class_folders_with_non_utf8_names_are_read() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let val = dir.path().join("val");
    let odd = val.join(std::ffi::OsStr::from_bytes(b"class_\xff\xfe"));
    copy_dir(&fixture("images/val/n02123045"), &odd);
    let weights = fixture("model/tiny.safetensors");
    let o = run(&[
        "verify",
        "--imagenet",
        s(&val),
        "--weights",
        s(&weights),
        "--limit",
        "2",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["images"], 2);
}
