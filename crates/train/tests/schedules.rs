//! The recipe's schedules against golden values computed with numpy the way the reference does
//! (fixtures/gen/make_schedules.py): every value of every step, bit for bit.

use illama_train::schedule::{cosine, drop_rate, soft_mask, DropMode, EarlySchedule, MaskMode};
use serde_json::Value;

fn early(s: &str) -> EarlySchedule {
    match s {
        "constant" => EarlySchedule::Constant,
        "linear" => EarlySchedule::Linear,
        other => panic!("schedule {other}"),
    }
}

#[test]
fn schedules_equal_the_reference_bit_for_bit() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/train/schedules.json"
    );
    let golden: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let cases = golden["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 14);
    for c in cases {
        let a = c["args"].as_array().unwrap();
        let f = |i: usize| a[i].as_f64().unwrap();
        let u = |i: usize| a[i].as_u64().unwrap() as usize;
        let st = |i: usize| a[i].as_str().unwrap();
        let got = match c["kind"].as_str().unwrap() {
            "cosine" => {
                let steps = a[6].as_i64().unwrap();
                cosine(
                    f(0),
                    f(1),
                    u(2),
                    u(3),
                    u(4),
                    f(5),
                    (steps > 0).then_some(steps as usize),
                )
            }
            "soft_mask" => {
                let mode = match st(4) {
                    "standard" => MaskMode::Standard,
                    _ => MaskMode::Soft,
                };
                soft_mask(f(0), u(1), u(2), u(3), mode, early(st(5)))
            }
            "drop" => {
                let mode = match st(4) {
                    "standard" => DropMode::Standard,
                    "early" => DropMode::Early,
                    _ => DropMode::Late,
                };
                drop_rate(f(0), u(1), u(2), u(3), mode, early(st(5)))
            }
            other => panic!("kind {other}"),
        }
        .unwrap();
        let want: Vec<u64> = c["bits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap())
            .collect();
        let got: Vec<u64> = got.iter().map(|v| v.to_bits()).collect();
        assert_eq!(got.len(), want.len(), "{}", c["name"]);
        let first_diff = got.iter().zip(&want).position(|(g, w)| g != w);
        assert_eq!(first_diff, None, "{}: step {first_diff:?}", c["name"]);
    }
}
