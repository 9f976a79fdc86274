//! Writes a random LLaMA teacher in Hugging Face layout, full size, for benchmarks:
//! `config.json`, fp16 safetensors shards with the real key names and shapes, and
//! `model.safetensors.index.json`. Tensor bytes are generated while they are written (8 MiB at a
//! time), so memory stays small whatever the size.
//!
//! ```sh
//! cargo run --release -p illama-select --example gen_llama_teacher -- bench-data/llama2-7b-random
//! cargo run --release -p illama-select --example gen_llama_teacher -- /tmp/t --preset tiny-test
//! # small enough for a smoke run, large enough for the tiny, small and base students:
//! cargo run --release -p illama-select --example gen_llama_teacher -- /tmp/t --preset tiny-test \
//!     --hidden 1024 --intermediate 2816 --heads 8 --layers 12
//! ```
//!
//! Values are deterministic (xorshift64*, seeded from the seed and the tensor's name, so a tensor
//! does not depend on write order) and finite: fp16 with a random sign, exponent field 8..=15 and
//! a random mantissa, i.e. magnitudes in [2^-7, 2). No NaN, no infinity, no subnormal.

use illama_formats::{DType, FormatError, OutTensor};
use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

const CHUNK: usize = 8 << 20;

#[derive(Clone, Copy)]
struct Shape {
    name: &'static str,
    hidden: usize,
    intermediate: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    vocab: usize,
    /// Largest shard in bytes (Hugging Face's `max_shard_size`); `None`: three quarters of the
    /// total, so that small presets are sharded in two too.
    shard_size: Option<u64>,
}

const LLAMA2_7B: Shape = Shape {
    name: "llama2-7b",
    hidden: 4096,
    intermediate: 11008,
    layers: 32,
    heads: 32,
    kv_heads: 32,
    vocab: 32000,
    // The Hugging Face release used "10GB" (decimal): 9.98 GB + 3.50 GB.
    shard_size: Some(10_000_000_000),
};

const TINY_TEST: Shape = Shape {
    name: "tiny-test",
    hidden: 256,
    intermediate: 688,
    layers: 4,
    heads: 4,
    kv_heads: 4,
    vocab: 1024,
    shard_size: None,
};

struct Tensor {
    name: String,
    shape: Vec<usize>,
}

impl Tensor {
    fn nbytes(&self) -> u64 {
        self.shape.iter().product::<usize>() as u64 * 2
    }
}

/// The tensors of a LLaMA checkpoint in the order `LlamaForCausalLM.state_dict()` lists them.
fn tensors(s: &Shape) -> Vec<Tensor> {
    let (h, i) = (s.hidden, s.intermediate);
    let kv = h / s.heads * s.kv_heads;
    let t = |name: String, shape: Vec<usize>| Tensor { name, shape };
    let mut out = vec![t("model.embed_tokens.weight".into(), vec![s.vocab, h])];
    for l in 0..s.layers {
        let p = format!("model.layers.{l}");
        out.push(t(format!("{p}.self_attn.q_proj.weight"), vec![h, h]));
        out.push(t(format!("{p}.self_attn.k_proj.weight"), vec![kv, h]));
        out.push(t(format!("{p}.self_attn.v_proj.weight"), vec![kv, h]));
        out.push(t(format!("{p}.self_attn.o_proj.weight"), vec![h, h]));
        out.push(t(format!("{p}.mlp.gate_proj.weight"), vec![i, h]));
        out.push(t(format!("{p}.mlp.up_proj.weight"), vec![i, h]));
        out.push(t(format!("{p}.mlp.down_proj.weight"), vec![h, i]));
        out.push(t(format!("{p}.input_layernorm.weight"), vec![h]));
        out.push(t(format!("{p}.post_attention_layernorm.weight"), vec![h]));
    }
    out.push(t("model.norm.weight".into(), vec![h]));
    out.push(t("lm_head.weight".into(), vec![s.vocab, h]));
    out
}

/// Greedy split in state-dict order, as `transformers`' `shard_checkpoint` does.
fn shards(tensors: Vec<Tensor>, max: u64) -> Vec<Vec<Tensor>> {
    let mut out: Vec<Vec<Tensor>> = vec![Vec::new()];
    let mut size = 0u64;
    for t in tensors {
        let n = t.nbytes();
        if size + n > max && !out.last().unwrap().is_empty() {
            out.push(Vec::new());
            size = 0;
        }
        size += n;
        out.last_mut().unwrap().push(t);
    }
    out
}

fn seed_of(seed: u64, name: &str) -> u64 {
    // FNV-1a of the name, mixed with the seed; never zero (xorshift's fixed point).
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h | 1
}

/// Fills `buf` (a multiple of 8 bytes) with four fp16 values per xorshift64* step.
fn fill(state: &mut u64, buf: &mut [u8]) {
    // Keep sign and mantissa, force the exponent field into 0b01xxx (8..=15).
    const MASK: u64 = 0x9fff_9fff_9fff_9fff;
    const SET: u64 = 0x2000_2000_2000_2000;
    let mut x = *state;
    for c in buf.chunks_exact_mut(8) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
        c.copy_from_slice(&((r & MASK) | SET).to_le_bytes());
    }
    *state = x;
}

fn config_json(s: &Shape) -> serde_json::Value {
    serde_json::json!({
        "_name_or_path": format!("random-{}", s.name),
        "architectures": ["LlamaForCausalLM"],
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": s.hidden,
        "initializer_range": 0.02,
        "intermediate_size": s.intermediate,
        "max_position_embeddings": 4096,
        "model_type": "llama",
        "num_attention_heads": s.heads,
        "num_hidden_layers": s.layers,
        "num_key_value_heads": s.kv_heads,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_scaling": null,
        "tie_word_embeddings": false,
        "torch_dtype": "float16",
        "transformers_version": "4.31.0.dev0",
        "use_cache": true,
        "vocab_size": s.vocab
    })
}

fn write_shard(path: &Path, tensors: &[Tensor], seed: u64) -> Result<(), String> {
    let tmp = path.with_extension("safetensors.partial");
    let file = std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let out: Vec<OutTensor<'_>> = tensors
        .iter()
        .map(|t| {
            let nbytes = t.nbytes();
            let mut state = seed_of(seed, &t.name);
            OutTensor {
                name: t.name.clone(),
                dtype: DType::F16,
                shape: t.shape.clone(),
                nbytes,
                write: Box::new(move |w: &mut dyn Write, out: &std::path::Path| {
                    let mut buf = vec![0u8; CHUNK.min(nbytes as usize).next_multiple_of(8)];
                    let mut left = nbytes as usize;
                    while left > 0 {
                        let n = left.min(buf.len());
                        fill(&mut state, &mut buf);
                        w.write_all(&buf[..n])
                            .map_err(|e| FormatError::io(out, e))?;
                        left -= n;
                    }
                    Ok(())
                }),
            }
        })
        .collect();
    let mut md = BTreeMap::new();
    md.insert("format".to_string(), "pt".to_string());
    illama_formats::safetensors_io::write_safetensors(&mut w, &tmp, out, &md)
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    let file = w
        .into_inner()
        .map_err(|e| format!("{}: {}", tmp.display(), e.error()))?;
    file.sync_all()
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

const USAGE: &str = "usage: gen_llama_teacher OUT_DIR [--preset llama2-7b|tiny-test] [--seed N] [--shard-size BYTES]
    [--layers N] [--hidden N] [--intermediate N] [--heads N] [--kv-heads N] [--vocab N]
  (the last six override the preset's shape; --heads sets --kv-heads too unless given after it)";

fn main() {
    if let Err(e) = run() {
        eprintln!("gen_llama_teacher: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let mut out: Option<PathBuf> = None;
    let mut shape = LLAMA2_7B;
    let mut seed = 0u64;
    while let Some(a) = args.next() {
        let mut value = |flag: &str| args.next().ok_or(format!("{flag} needs a value\n{USAGE}"));
        let number = |flag: &str, v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag} {v}: not a number\n{USAGE}"))
        };
        match a.as_str() {
            "--preset" => {
                shape = match value("--preset")?.as_str() {
                    "llama2-7b" => LLAMA2_7B,
                    "tiny-test" => TINY_TEST,
                    p => return Err(format!("unknown preset {p}\n{USAGE}")),
                }
            }
            "--layers" => shape.layers = number("--layers", value("--layers")?)? as usize,
            "--hidden" => shape.hidden = number("--hidden", value("--hidden")?)? as usize,
            "--intermediate" => {
                shape.intermediate = number("--intermediate", value("--intermediate")?)? as usize
            }
            "--heads" => {
                shape.heads = number("--heads", value("--heads")?)? as usize;
                shape.kv_heads = shape.heads;
            }
            "--kv-heads" => shape.kv_heads = number("--kv-heads", value("--kv-heads")?)? as usize,
            "--vocab" => shape.vocab = number("--vocab", value("--vocab")?)? as usize,
            "--shard-size" => {
                shape.shard_size = Some(number("--shard-size", value("--shard-size")?)?)
            }
            "--seed" => seed = number("--seed", value("--seed")?)?,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            s if s.starts_with('-') => return Err(format!("unknown option {s}\n{USAGE}")),
            s if out.is_none() => out = Some(PathBuf::from(s)),
            s => return Err(format!("unexpected argument {s}\n{USAGE}")),
        }
    }
    let out = out.ok_or(USAGE)?;
    if shape.heads == 0
        || shape.kv_heads == 0
        || shape.hidden % shape.heads != 0
        || shape.heads % shape.kv_heads != 0
    {
        return Err(format!(
            "hidden {} must be a multiple of heads {}, and heads of kv-heads {}",
            shape.hidden, shape.heads, shape.kv_heads
        ));
    }
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;

    let all = tensors(&shape);
    let total: u64 = all.iter().map(Tensor::nbytes).sum();
    let max = shape.shard_size.unwrap_or(total / 4 * 3);
    let groups = shards(all, max);
    let n = groups.len();
    let names: Vec<String> = (1..=n)
        .map(|i| format!("model-{i:05}-of-{n:05}.safetensors"))
        .collect();

    std::fs::write(
        out.join("config.json"),
        serde_json::to_string_pretty(&config_json(&shape)).unwrap() + "\n",
    )
    .map_err(|e| format!("{}: {e}", out.display()))?;

    let start = Instant::now();
    let mut weight_map = serde_json::Map::new();
    for (group, name) in groups.iter().zip(&names) {
        let t0 = Instant::now();
        let bytes: u64 = group.iter().map(Tensor::nbytes).sum();
        write_shard(&out.join(name), group, seed)?;
        let secs = t0.elapsed().as_secs_f64();
        eprintln!(
            "{name}: {} tensors, {:.2} GB in {secs:.1} s ({:.0} MB/s)",
            group.len(),
            bytes as f64 / 1e9,
            bytes as f64 / 1e6 / secs
        );
        for t in group {
            weight_map.insert(t.name.clone(), name.clone().into());
        }
    }
    let index = serde_json::json!({
        "metadata": {"total_size": total},
        "weight_map": weight_map,
    });
    std::fs::write(
        out.join("model.safetensors.index.json"),
        serde_json::to_string_pretty(&index).unwrap() + "\n",
    )
    .map_err(|e| format!("{}: {e}", out.display()))?;
    eprintln!(
        "{}: {} ({} layers, hidden {}, intermediate {}), {:.2} GB of fp16 in {} shard(s), {:.1} s",
        out.display(),
        shape.name,
        shape.layers,
        shape.hidden,
        shape.intermediate,
        total as f64 / 1e9,
        n,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
