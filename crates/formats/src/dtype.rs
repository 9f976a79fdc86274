//! Element types and their names in the two formats.

use serde::Serialize;
use std::fmt;

/// The element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum DType {
    Bool,
    U8,
    I8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    F16,
    BF16,
    F32,
    F64,
    C64,
    C128,
    F8E4M3,
    F8E5M2,
}

impl DType {
    pub const ALL: [DType; 17] = [
        DType::Bool,
        DType::U8,
        DType::I8,
        DType::I16,
        DType::U16,
        DType::I32,
        DType::U32,
        DType::I64,
        DType::U64,
        DType::F16,
        DType::BF16,
        DType::F32,
        DType::F64,
        DType::C64,
        DType::C128,
        DType::F8E4M3,
        DType::F8E5M2,
    ];

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::Bool | DType::U8 | DType::I8 | DType::F8E4M3 | DType::F8E5M2 => 1,
            DType::I16 | DType::U16 | DType::F16 | DType::BF16 => 2,
            DType::I32 | DType::U32 | DType::F32 => 4,
            DType::I64 | DType::U64 | DType::F64 | DType::C64 => 8,
            DType::C128 => 16,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F16 | DType::BF16 | DType::F32 | DType::F64)
    }

    /// The name used in safetensors headers; `None` where safetensors has no such type.
    pub fn safetensors_name(self) -> Option<&'static str> {
        Some(match self {
            DType::Bool => "BOOL",
            DType::U8 => "U8",
            DType::I8 => "I8",
            DType::I16 => "I16",
            DType::U16 => "U16",
            DType::I32 => "I32",
            DType::U32 => "U32",
            DType::I64 => "I64",
            DType::U64 => "U64",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::F32 => "F32",
            DType::F64 => "F64",
            DType::C64 => "C64",
            DType::F8E4M3 => "F8_E4M3",
            DType::F8E5M2 => "F8_E5M2",
            DType::C128 => return None,
        })
    }

    pub fn from_safetensors(d: safetensors::Dtype) -> Option<DType> {
        use safetensors::Dtype as S;
        Some(match d {
            S::BOOL => DType::Bool,
            S::U8 => DType::U8,
            S::I8 => DType::I8,
            S::I16 => DType::I16,
            S::U16 => DType::U16,
            S::I32 => DType::I32,
            S::U32 => DType::U32,
            S::I64 => DType::I64,
            S::U64 => DType::U64,
            S::F16 => DType::F16,
            S::BF16 => DType::BF16,
            S::F32 => DType::F32,
            S::F64 => DType::F64,
            S::C64 => DType::C64,
            S::F8_E4M3 => DType::F8E4M3,
            S::F8_E5M2 => DType::F8E5M2,
            _ => return None,
        })
    }

    /// The legacy typed-storage class torch pickles for this dtype (`torch.FloatStorage`), if any.
    pub fn torch_storage_class(self) -> Option<&'static str> {
        Some(match self {
            DType::Bool => "BoolStorage",
            DType::U8 => "ByteStorage",
            DType::I8 => "CharStorage",
            DType::I16 => "ShortStorage",
            DType::I32 => "IntStorage",
            DType::I64 => "LongStorage",
            DType::F16 => "HalfStorage",
            DType::BF16 => "BFloat16Storage",
            DType::F32 => "FloatStorage",
            DType::F64 => "DoubleStorage",
            DType::C64 => "ComplexFloatStorage",
            DType::C128 => "ComplexDoubleStorage",
            DType::U16 | DType::U32 | DType::U64 | DType::F8E4M3 | DType::F8E5M2 => return None,
        })
    }

    pub fn from_torch_storage_class(name: &str) -> Option<DType> {
        DType::ALL
            .into_iter()
            .find(|d| d.torch_storage_class() == Some(name))
    }

    /// The attribute of the `torch` module naming this dtype (`torch.float32`).
    pub fn torch_name(self) -> &'static str {
        match self {
            DType::Bool => "bool",
            DType::U8 => "uint8",
            DType::I8 => "int8",
            DType::I16 => "int16",
            DType::U16 => "uint16",
            DType::I32 => "int32",
            DType::U32 => "uint32",
            DType::I64 => "int64",
            DType::U64 => "uint64",
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::C64 => "complex64",
            DType::C128 => "complex128",
            DType::F8E4M3 => "float8_e4m3fn",
            DType::F8E5M2 => "float8_e5m2",
        }
    }

    pub fn from_torch_name(name: &str) -> Option<DType> {
        let aliases = [
            ("float", DType::F32),
            ("double", DType::F64),
            ("half", DType::F16),
            ("long", DType::I64),
            ("int", DType::I32),
            ("short", DType::I16),
            ("cfloat", DType::C64),
            ("cdouble", DType::C128),
        ];
        DType::ALL
            .into_iter()
            .find(|d| d.torch_name() == name)
            .or_else(|| aliases.iter().find(|(a, _)| *a == name).map(|(_, d)| *d))
    }

    /// Parses the spelling a user types on the command line (`f16`, `bf16`, `float32`, ...).
    pub fn parse_user(s: &str) -> Option<DType> {
        let s = s.to_ascii_lowercase();
        match s.as_str() {
            "f16" | "fp16" => Some(DType::F16),
            "bf16" => Some(DType::BF16),
            "f32" | "fp32" => Some(DType::F32),
            "f64" | "fp64" => Some(DType::F64),
            _ => DType::from_torch_name(&s).or_else(|| {
                DType::ALL.into_iter().find(|d| {
                    d.safetensors_name()
                        .is_some_and(|n| n.eq_ignore_ascii_case(&s))
                })
            }),
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.safetensors_name() {
            Some(n) => n,
            None => "C128",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in DType::ALL {
            assert_eq!(DType::from_torch_name(d.torch_name()), Some(d));
            if let Some(c) = d.torch_storage_class() {
                assert_eq!(DType::from_torch_storage_class(c), Some(d));
            }
            if let Some(n) = d.safetensors_name() {
                assert_eq!(DType::parse_user(n), Some(d));
            }
        }
        assert_eq!(DType::parse_user("fp16"), Some(DType::F16));
        assert_eq!(DType::parse_user("nope"), None);
    }
}
