//! `--init`: non-strict loading into trainable parameters, with the report of what came from the
//! file; head dropped on a class-count change; pos_embed interpolated to the model's grid.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use illama_arch::IllamaConfig;
use illama_model::{init_from, Illama};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(name)
}

fn trainable(config: IllamaConfig) -> HashMap<String, Var> {
    let varmap = VarMap::new();
    Illama::new(
        config,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )
    .unwrap();
    let vars = varmap.data().lock().unwrap().clone();
    vars
}

fn same(a: &Tensor, b: &Tensor) -> bool {
    a.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        == b.to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
}

#[test]
fn selected_weights_fill_the_blocks_and_the_rest_stays_random() {
    let path = fixture("selection/expected_llama_custom_f16.safetensors");
    let file = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let depth = file
        .keys()
        .filter(|k| k.ends_with("attn.qkv.weight"))
        .count();
    let config = IllamaConfig {
        mlp_hidden: 112,
        img_size: 32,
        num_classes: 10,
        ..IllamaConfig::new(40, depth, 2)
    };
    let params = trainable(config);
    let report = init_from(&path, None, &params).unwrap();
    assert_eq!(report.loaded.len(), 7 * depth);
    // LLaMA has no attention biases: they stay random too, with everything outside the blocks.
    let mut random: Vec<String> = (0..depth)
        .flat_map(|i| {
            [
                format!("blocks.{i}.attn.proj.bias"),
                format!("blocks.{i}.attn.qkv.bias"),
            ]
        })
        .chain(
            [
                "cls_token",
                "head.bias",
                "head.weight",
                "norm.weight",
                "patch_embed.proj.bias",
                "patch_embed.proj.weight",
                "pos_embed",
            ]
            .map(String::from),
        )
        .collect();
    random.sort();
    assert_eq!(report.random, random);
    assert!(report.unused.is_empty() && report.head_dropped.is_none());
    let name = "blocks.1.mlp.fc2.weight";
    assert!(same(params[name].as_tensor(), &file[name]));
}

#[test]
fn a_new_head_and_input_size_are_handled_and_other_mismatches_refused() {
    // fixtures/model/custom: dim 64, depth 3, heads 2, 64 px (4 x 4 patches), 10 classes.
    let path = fixture("model/custom.safetensors");
    let file = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let config = IllamaConfig {
        img_size: 32,
        num_classes: 5,
        ..IllamaConfig::new(64, 3, 2)
    };
    let params = trainable(config);
    let head_before = params["head.weight"].as_tensor().copy().unwrap();
    let report = init_from(&path, None, &params).unwrap();
    assert_eq!(
        report.head_dropped.as_deref(),
        Some("10 classes in the file, 5 in the model")
    );
    assert_eq!(report.random, ["head.bias", "head.weight"]);
    assert_eq!(report.pos_embed_from_grid, Some(4));
    assert!(same(params["head.weight"].as_tensor(), &head_before));
    assert!(same(
        params["blocks.2.attn.qkv.weight"].as_tensor(),
        &file["blocks.2.attn.qkv.weight"]
    ));
    let pos: Vec<f32> = file["pos_embed"].flatten_all().unwrap().to_vec1().unwrap();
    let want = illama_model::pos_embed::interpolate(&pos, 64, 4, 2).unwrap();
    assert_eq!(
        params["pos_embed"]
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap(),
        want
    );

    // Another width: refused, naming the tensor.
    let wider = trainable(IllamaConfig {
        img_size: 64,
        num_classes: 10,
        ..IllamaConfig::new(64, 3, 2)
    });
    let mut wrong = wider.clone();
    let bad =
        Var::from_tensor(&Tensor::zeros((3 * 64, 32), DType::F32, &Device::Cpu).unwrap()).unwrap();
    wrong.insert("blocks.0.attn.qkv.weight".into(), bad);
    let e = init_from(&path, None, &wrong).unwrap_err().to_string();
    assert!(e.contains("blocks.0.attn.qkv.weight"), "{e}");
}
