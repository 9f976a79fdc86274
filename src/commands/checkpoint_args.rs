//! Argument values shared by the commands that write checkpoints (`convert`, `select`), so that a
//! format or dtype is spelled and checked the same way everywhere.

use illama_formats::{DType, TargetFormat};

/// `--to` of `convert`, `--format` of `select`.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum FileFormat {
    Safetensors,
    Pth,
}

impl From<FileFormat> for TargetFormat {
    fn from(f: FileFormat) -> TargetFormat {
        match f {
            FileFormat::Safetensors => TargetFormat::Safetensors,
            FileFormat::Pth => TargetFormat::Pth,
        }
    }
}

/// `--dtype` of the commands that write checkpoints: `keep` (`None`) or a float type to cast
/// floating-point tensors to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OutputDType(pub Option<DType>);

pub fn parse_output_dtype(s: &str) -> Result<OutputDType, String> {
    if s == "keep" {
        return Ok(OutputDType(None));
    }
    match DType::parse_user(s) {
        Some(d) if d.is_float() => Ok(OutputDType(Some(d))),
        _ => Err(format!("'{s}': expected keep, f32, f16, bf16 or f64")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtypes_are_keep_or_a_float_type() {
        assert_eq!(parse_output_dtype("keep"), Ok(OutputDType(None)));
        assert_eq!(
            parse_output_dtype("bf16"),
            Ok(OutputDType(Some(DType::BF16)))
        );
        assert!(parse_output_dtype("i64")
            .unwrap_err()
            .contains("expected keep"));
    }
}
