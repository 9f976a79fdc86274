pub mod args;
pub mod bench_train;
pub mod checkpoint_args;
pub mod convert;
pub mod finetune;
pub mod inspect;
pub mod logits;
pub mod predict;
pub mod quickstart;
pub mod select;
pub mod verify;

/// `1.5 GB`-style sizes for people.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `--model`: `tiny`, `small`, `base`, `large`, or `custom:DIM,DEPTH,HEADS[,MLP_HIDDEN]`.
pub fn parse_model(s: &str) -> anyhow::Result<illama_arch::IllamaConfig> {
    illama_arch::IllamaConfig::parse_spec(s).map_err(|e| anyhow::anyhow!("--model {s}: {e}"))
}

/// `f32`, `bf16` or `f16`: the dtype the model computes in.
pub fn parse_compute_dtype(s: &str) -> Result<candle_core::DType, String> {
    match s {
        "f32" | "fp32" => Ok(candle_core::DType::F32),
        "bf16" => Ok(candle_core::DType::BF16),
        "f16" | "fp16" => Ok(candle_core::DType::F16),
        _ => Err(format!("'{s}': expected f32, bf16 or f16")),
    }
}

/// `--precision`: f32, or bf16 mixed precision.
pub fn parse_precision(s: &str) -> Result<illama_model::Precision, String> {
    illama_model::Precision::parse(s).ok_or_else(|| format!("'{s}': expected f32 or bf16"))
}

/// `--input-size`: a multiple of the patch size (16) within the model's bounds.
pub fn parse_input_size(s: &str) -> Result<usize, String> {
    let n: usize = s
        .parse()
        .map_err(|_| format!("'{s}' is not a whole number"))?;
    illama_arch::check_input_size(n, 16).map_err(|e| e.to_string())?;
    Ok(n)
}

/// A rate in [0, 1] (`--soft-mask-rate`).
pub fn parse_unit_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        Ok(_) => Err(format!("{s} is outside [0, 1]")),
        Err(_) => Err(format!("'{s}' is not a number")),
    }
}

/// A count of at least one (`--batch-size`, `--limit`, `--workers`, `--topk`).
pub fn parse_positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("'{s}' is not a whole number")),
    }
}

/// A name from a file, safe to print on a terminal: control characters (escape sequences,
/// carriage returns) are shown escaped instead of acting on the terminal.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if s.chars().any(char::is_control) {
        s.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect::<String>()
            .into()
    } else {
        s.into()
    }
}
