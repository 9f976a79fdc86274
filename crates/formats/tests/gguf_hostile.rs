//! Broken and hostile GGUF files, built byte by byte: each is refused with a message naming the
//! problem, without allocating what a header merely claims.

use illama_formats::gguf::GgufFile;
use std::path::Path;

/// A GGUF file under construction: header fields, metadata, tensor records and data.
struct Gguf {
    magic: [u8; 4],
    version: u32,
    n_tensors: Option<u64>,
    n_kv: Option<u64>,
    kv: Vec<u8>,
    kv_count: u64,
    tensors: Vec<u8>,
    tensor_count: u64,
    data: Vec<u8>,
}

fn string(s: &str) -> Vec<u8> {
    let mut b = (s.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(s.as_bytes());
    b
}

impl Gguf {
    fn new() -> Gguf {
        Gguf {
            magic: *b"GGUF",
            version: 3,
            n_tensors: None,
            n_kv: None,
            kv: Vec::new(),
            kv_count: 0,
            tensors: Vec::new(),
            tensor_count: 0,
            data: Vec::new(),
        }
    }
    fn kv_raw(mut self, key: &str, ty: u32, value: &[u8]) -> Gguf {
        self.kv.extend(string(key));
        self.kv.extend(ty.to_le_bytes());
        self.kv.extend_from_slice(value);
        self.kv_count += 1;
        self
    }
    fn kv_u32(self, key: &str, v: u32) -> Gguf {
        self.kv_raw(key, 4, &v.to_le_bytes())
    }
    /// A tensor record (dims fastest first) with `offset` into the data section.
    fn tensor(mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> Gguf {
        self.tensors.extend(string(name));
        self.tensors.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            self.tensors.extend(d.to_le_bytes());
        }
        self.tensors.extend(ty.to_le_bytes());
        self.tensors.extend(offset.to_le_bytes());
        self.tensor_count += 1;
        self
    }
    fn data(mut self, n: usize) -> Gguf {
        self.data = (0..n).map(|i| i as u8).collect();
        self
    }
    fn bytes(&self) -> Vec<u8> {
        let mut b = self.magic.to_vec();
        b.extend(self.version.to_le_bytes());
        b.extend(self.n_tensors.unwrap_or(self.tensor_count).to_le_bytes());
        b.extend(self.n_kv.unwrap_or(self.kv_count).to_le_bytes());
        b.extend(&self.kv);
        b.extend(&self.tensors);
        while b.len() % 32 != 0 {
            b.push(0);
        }
        b.extend(&self.data);
        b
    }
}

fn valid() -> Gguf {
    Gguf::new()
        .kv_raw("general.architecture", 8, &string("llama"))
        .kv_u32("general.alignment", 32)
        .tensor("a", &[32, 2], 8, 0) // Q8_0: 2 rows of one 34-byte block
        .tensor("b", &[4], 0, 96)
        .data(112)
}

fn open(dir: &Path, name: &str, bytes: &[u8]) -> Result<GgufFile, String> {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    GgufFile::open(&p).map_err(|e| e.to_string())
}

#[test]
fn a_well_formed_file_opens_and_reads() {
    let dir = tempfile::tempdir().unwrap();
    let f = open(dir.path(), "ok.gguf", &valid().bytes()).unwrap();
    assert_eq!(f.tensors.len(), 2);
    assert_eq!(f.tensors[0].shape, vec![2, 32]);
    let (mut raw, mut row) = (Vec::new(), vec![0f32; 32]);
    f.read_row_f32(&f.tensors[0], 1, &mut raw, &mut row)
        .unwrap();
}

#[test]
fn hostile_files_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let ok = valid().bytes();
    let mut cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", Vec::new(), "needs 4 bytes, only 0 are left"),
        (
            "truncated_header",
            ok[..40].to_vec(),
            "cannot fit in a 40-byte file",
        ),
        ("truncated_records", ok[..100].to_vec(), "are left"),
        (
            "truncated_data",
            ok[..ok.len() - 20].to_vec(),
            "end past the file's",
        ),
        (
            "version1",
            {
                let mut g = valid();
                g.version = 1;
                g.bytes()
            },
            "version 1",
        ),
        (
            "big_endian",
            {
                let mut g = valid();
                g.version = 3u32.swap_bytes();
                g.bytes()
            },
            "big-endian",
        ),
        (
            "version9",
            {
                let mut g = valid();
                g.version = 9;
                g.bytes()
            },
            "GGUF version 9",
        ),
        (
            "huge_tensor_count",
            {
                let mut g = valid();
                g.n_tensors = Some(u64::MAX / 2);
                g.bytes()
            },
            "cannot fit",
        ),
        (
            "huge_kv_count",
            {
                let mut g = valid();
                g.n_kv = Some(1 << 40);
                g.bytes()
            },
            "cannot fit",
        ),
        (
            "string_length_lie",
            valid().kv_raw("x", 8, &(1u64 << 50).to_le_bytes()).bytes(),
            "needs 1125899906842624 bytes",
        ),
        (
            "array_count_lie",
            valid()
                .kv_raw(
                    "x",
                    9,
                    &[
                        4u32.to_le_bytes().as_slice(),
                        (1u64 << 40).to_le_bytes().as_slice(),
                    ]
                    .concat(),
                )
                .bytes(),
            "does not fit",
        ),
        (
            "unknown_value_type",
            valid().kv_raw("x", 99, &[0; 8]).bytes(),
            "unknown metadata value type 99",
        ),
        (
            "bad_bool",
            valid().kv_raw("x", 7, &[2]).bytes(),
            "bool byte 2",
        ),
        (
            "bad_alignment",
            Gguf::new().kv_u32("general.alignment", 24).bytes(),
            "not a power of two",
        ),
        (
            "duplicate_key",
            valid().kv_u32("general.alignment", 32).bytes(),
            "appears twice",
        ),
        (
            "unknown_type",
            valid().tensor("c", &[4], 77, 128).data(160).bytes(),
            "unknown ggml type 77",
        ),
        (
            "nine_dims",
            valid().tensor("c", &[1; 9], 0, 128).bytes(),
            "9 dimensions",
        ),
        (
            "partial_block",
            valid().tensor("c", &[33, 1], 8, 128).data(200).bytes(),
            "not a whole number of Q8_0 blocks",
        ),
        (
            "offset_past_end",
            valid().tensor("c", &[4], 0, 1 << 40).bytes(),
            "end past the file's",
        ),
        (
            "misaligned",
            valid().tensor("c", &[4], 0, 120).data(200).bytes(),
            "not a multiple of the alignment",
        ),
        (
            "overlap",
            valid().tensor("c", &[4], 0, 64).bytes(),
            "overlap",
        ),
        (
            "duplicate_tensor",
            valid().tensor("a", &[4], 0, 128).data(160).bytes(),
            "'a' appears twice",
        ),
        (
            "zero_dim",
            valid().tensor("c", &[0, 1 << 40, 1 << 40], 0, 128).bytes(),
            "include 0",
        ),
        (
            "version0",
            {
                let mut g = valid();
                g.version = 0;
                g.bytes()
            },
            "GGUF version 0",
        ),
        (
            "dims_overflow",
            valid().tensor("c", &[u64::MAX, u64::MAX], 0, 128).bytes(),
            "too large",
        ),
        (
            "not_utf8",
            valid()
                .kv_raw("x", 8, &[&2u64.to_le_bytes()[..], &[0xff, 0xfe]].concat())
                .bytes(),
            "not UTF-8",
        ),
    ];
    let mut nested = valid();
    let mut deep = Vec::new();
    for _ in 0..6 {
        deep.extend(9u32.to_le_bytes());
        deep.extend(1u64.to_le_bytes());
    }
    deep.extend(4u32.to_le_bytes());
    deep.extend(0u64.to_le_bytes());
    nested = nested.kv_raw("x", 9, &deep);
    cases.push(("nested", nested.bytes(), "nested more than"));
    for (name, bytes, want) in cases {
        let err = open(dir.path(), &format!("{name}.gguf"), &bytes)
            .err()
            .unwrap_or_else(|| panic!("{name}: opened"));
        assert!(err.contains(want), "{name}: {err}");
        assert!(
            err.contains(&format!("{name}.gguf")),
            "{name}: names no file: {err}"
        );
        assert!(err.len() < 600, "{name}: {} bytes", err.len());
    }
}

#[test]
fn types_this_tool_cannot_dequantise_are_named() {
    let dir = tempfile::tempdir().unwrap();
    // Q2_K: listed with its geometry, refused when read.
    let g = Gguf::new().tensor("q2", &[256, 1], 10, 0).data(96);
    let f = open(dir.path(), "q2k.gguf", &g.bytes()).unwrap();
    let (mut raw, mut row) = (Vec::new(), vec![0f32; 256]);
    let err = f
        .read_row_f32(&f.tensors[0], 0, &mut raw, &mut row)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("'q2' is Q2_K, which this tool cannot dequantise"),
        "{err}"
    );
}

/// Long arrays (vocabularies) are checked and skipped, keeping their length only, so that
/// memory does not grow with them; a lie inside one is still found.
#[test]
fn long_arrays_keep_their_length_only() {
    use illama_formats::gguf::GgufValue;
    let dir = tempfile::tempdir().unwrap();
    let mut strings = 8u32.to_le_bytes().to_vec();
    strings.extend(5000u64.to_le_bytes());
    for i in 0..5000 {
        strings.extend(string(&format!("tok{i}")));
    }
    let mut bytes_array = 0u32.to_le_bytes().to_vec();
    bytes_array.extend(100_000u64.to_le_bytes());
    bytes_array.extend(vec![7u8; 100_000]);
    let g = valid()
        .kv_raw("tokenizer.ggml.tokens", 9, &strings)
        .kv_raw("blob", 9, &bytes_array);
    let f = open(dir.path(), "long.gguf", &g.bytes()).unwrap();
    assert_eq!(
        f.metadata["tokenizer.ggml.tokens"],
        GgufValue::LongArray {
            element: "strings",
            len: 5000
        }
    );
    assert_eq!(f.metadata["blob"].summary(), "[100000 integers]");
    assert_eq!(f.tensors.len(), 2);

    // The last string claims more bytes than the file holds.
    let mut lying = strings.clone();
    let cut = lying.len() - "tok4999".len() - 8;
    lying.truncate(cut);
    lying.extend((1u64 << 40).to_le_bytes());
    let err = open(
        dir.path(),
        "lie.gguf",
        &valid().kv_raw("t", 9, &lying).bytes(),
    )
    .unwrap_err();
    assert!(err.contains("needs 1099511627776 bytes"), "{err}");
}
