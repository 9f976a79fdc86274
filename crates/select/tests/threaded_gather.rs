//! Selection from a teacher large enough that each matrix is gathered by several threads taking
//! blocks of rows in turn (one per CPU, at most 4: on a single CPU the same rows are gathered by
//! one thread): every output element must be the teacher element at the selected (row, column),
//! whatever thread read it and in whatever order. Teacher values encode their own position, so
//! the expected output is computed here without reading the teacher.

use illama_arch::IllamaConfig;
use illama_formats::{DType, NoProgress, OutTensor, OutputPolicy, TargetFormat, TensorStore};
use illama_select::{select, ElementSelection, LayerSelection, SelectOptions};
use std::collections::BTreeMap;
use std::path::Path;

const HIDDEN: usize = 256;
const INTERMEDIATE: usize = 688;
const LAYERS: usize = 2;

/// The fp16 bits stored at (`tensor`, `row`, `col`): a mix of the position, made finite (the
/// exponent field kept within 8..=15), so that a wrong row or column shows as a wrong value.
fn value(tensor: &str, row: usize, col: usize) -> u16 {
    let t = tensor
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
    let mut h = (row as u32).wrapping_mul(0x9e37_79b1)
        ^ (col as u32).wrapping_mul(0x85eb_ca77)
        ^ t.wrapping_mul(0xc2b2_ae3d);
    h ^= h >> 15;
    h = h.wrapping_mul(0x2c1b_3c6d);
    h ^= h >> 13;
    (h as u16 & 0x9fff) | 0x2000
}

fn weight(name: String, rows: usize, cols: usize) -> OutTensor<'static> {
    let bytes: Vec<u8> = (0..rows * cols)
        .flat_map(|i| value(&name, i / cols, i % cols).to_le_bytes())
        .collect();
    let shape = if rows == 1 {
        vec![cols]
    } else {
        vec![rows, cols]
    };
    OutTensor::from_bytes(name, DType::F16, shape, bytes)
}

fn write_teacher(dir: &Path) {
    let (h, i) = (HIDDEN, INTERMEDIATE);
    let mut tensors = Vec::new();
    for l in 0..LAYERS {
        let p = format!("model.layers.{l}");
        for (name, rows, cols) in [
            ("self_attn.q_proj.weight", h, h),
            ("self_attn.k_proj.weight", h, h),
            ("self_attn.v_proj.weight", h, h),
            ("self_attn.o_proj.weight", h, h),
            ("mlp.gate_proj.weight", i, h),
            ("mlp.up_proj.weight", i, h),
            ("mlp.down_proj.weight", h, i),
            ("input_layernorm.weight", 1, h),
            ("post_attention_layernorm.weight", 1, h),
        ] {
            tensors.push(weight(format!("{p}.{name}"), rows, cols));
        }
    }
    illama_formats::write_tensors(
        &dir.join("model.safetensors"),
        &OutputPolicy::new(false),
        TargetFormat::Safetensors,
        tensors,
        &BTreeMap::from([("format".to_string(), "pt".to_string())]),
    )
    .unwrap();
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": h,
        "intermediate_size": i,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "num_hidden_layers": LAYERS,
        "rms_norm_eps": 1e-05,
        "torch_dtype": "float16",
        "vocab_size": 32
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
}

/// A student tensor, the teacher tensors stacked into it (name, rows), its selected rows of the
/// stack and its selected columns.
type Case = (String, Vec<(String, usize)>, Vec<usize>, Vec<usize>);

#[test]
fn rows_gathered_by_several_threads_are_the_selected_elements() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = dir.path().join("teacher");
    std::fs::create_dir(&teacher).unwrap();
    write_teacher(&teacher);
    let (d, mh) = (192, 512);
    let student = IllamaConfig {
        mlp_hidden: mh,
        ..IllamaConfig::new(d, LAYERS, 3)
    };
    let out = dir.path().join("student.safetensors");
    let opts = SelectOptions {
        teacher: teacher.to_string_lossy().into_owned(),
        student,
        student_name: "custom".into(),
        layers: LayerSelection::First,
        elements: ElementSelection::Uniform,
        dtype: None,
        format: TargetFormat::Safetensors,
        output: Some(out.clone()),
        force: false,
        hash_teacher: false,
    };
    select(&opts, &NoProgress).unwrap();

    let idx = |t: usize, s: usize| ElementSelection::Uniform.indices(t, s).unwrap();
    let (h, i) = (HIDDEN, INTERMEDIATE);
    let store = TensorStore::open(&out).unwrap();
    let mut checked = 0;
    for l in 0..LAYERS {
        let p = format!("model.layers.{l}");
        let at = |name: &str| format!("{p}.{name}");
        let qkv: Vec<(String, usize)> = ["q", "k", "v"]
            .iter()
            .map(|w| (at(&format!("self_attn.{w}_proj.weight")), h))
            .collect();
        let mut cases: Vec<Case> = vec![(
            format!("blocks.{l}.attn.qkv.weight"),
            qkv,
            idx(3 * h, 3 * d),
            idx(h, d),
        )];
        // (student tensor, teacher tensor, teacher rows, (rows, cols) as (teacher, student) sizes)
        for (student, teacher, n, (rt, rs), (ct, cs)) in [
            ("attn.proj", "self_attn.o_proj", h, (h, d), (h, d)),
            ("mlp.fc1", "mlp.gate_proj", i, (i, mh), (h, d)),
            ("mlp.fc3", "mlp.up_proj", i, (i, mh), (h, d)),
            ("mlp.fc2", "mlp.down_proj", h, (h, d), (i, mh)),
        ] {
            cases.push((
                format!("blocks.{l}.{student}.weight"),
                vec![(at(&format!("{teacher}.weight")), n)],
                idx(rt, rs),
                idx(ct, cs),
            ));
        }
        for (name, sources, rows, cols) in cases {
            let t = store.get(&name).unwrap_or_else(|| panic!("{name} missing"));
            assert_eq!(t.shape, vec![rows.len(), cols.len()], "{name}");
            let bytes = store.bytes(t).unwrap();
            for (k, &r) in rows.iter().enumerate() {
                // The teacher tensor holding stacked row `r`, and the row within it.
                let (mut src, mut local) = (&sources[0].0, r);
                for (s, n) in &sources {
                    src = s;
                    if local < *n {
                        break;
                    }
                    local -= n;
                }
                for (j, &c) in cols.iter().enumerate() {
                    let e = (k * cols.len() + j) * 2;
                    let got = u16::from_le_bytes([bytes[e], bytes[e + 1]]);
                    assert_eq!(got, value(src, local, c), "{name}[{k}, {j}]");
                    checked += 1;
                }
            }
        }
        for (name, source) in [
            ("norm1", "input_layernorm.weight"),
            ("norm2", "post_attention_layernorm.weight"),
        ] {
            let t = store.get(&format!("blocks.{l}.{name}.weight")).unwrap();
            let bytes = store.bytes(t).unwrap();
            let want: Vec<u8> = idx(h, d)
                .iter()
                .flat_map(|&c| value(&at(source), 0, c).to_le_bytes())
                .collect();
            assert_eq!(&bytes[..], &want[..], "{name}");
        }
    }
    assert_eq!(checked, LAYERS * (3 * d * d + d * d + 3 * mh * d));
}
