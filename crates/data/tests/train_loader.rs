//! The training loader: seeded epochs and per-image random streams make batches independent of
//! worker count and of what ran before (a resumed run sees the same batches).

use illama_data::mix::Mixup;
use illama_data::train::TrainTransform;
use illama_data::{load_batches, Batch, Dataset, EpochSampler, LoaderOptions, Plan};
use std::path::Path;

fn dataset() -> Dataset {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/images/val");
    Dataset::image_folder(&root).unwrap()
}

fn epoch(ds: &Dataset, sampler: &EpochSampler, epoch: u64, workers: usize) -> Vec<Batch> {
    let mixup = Mixup::new(0.8, 1.0, 1.0, 0.5, 0.1, ds.classes.len()).unwrap();
    let opts = LoaderOptions {
        batch_size: sampler.batch_size(),
        workers,
        skip_bad: false,
        limit: None,
        prefetch: 2,
    };
    let rx = load_batches(
        ds,
        Plan::epoch(sampler, epoch),
        TrainTransform::recipe(32).unwrap(),
        Some(mixup),
        opts,
    )
    .unwrap();
    rx.iter().map(|b| b.unwrap()).collect()
}

fn same(a: &[Batch], b: &[Batch]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.indices == y.indices
                && x.labels == y.labels
                && x.targets == y.targets
                && x.pixels
                    .iter()
                    .map(|v| v.to_bits())
                    .eq(y.pixels.iter().map(|v| v.to_bits()))
        })
}

#[test]
fn batches_depend_on_seed_and_epoch_only() {
    let ds = dataset();
    assert!(ds.samples.len() >= 8, "{} fixture images", ds.samples.len());
    let sampler = EpochSampler::new(ds.samples.len(), 4, 11).unwrap();
    let one = epoch(&ds, &sampler, 0, 1);
    assert_eq!(one.len(), ds.samples.len() / 4, "full batches only");
    assert!(one
        .iter()
        .all(|b| b.targets.as_ref().unwrap().len() == 4 * ds.classes.len()));
    for workers in [2, 8] {
        let other = epoch(&ds, &sampler, 0, workers);
        assert!(
            same(&one, &other),
            "1 and {workers} workers must give identical batches"
        );
    }
    // The next epoch: another order and other augmentations.
    let next = epoch(&ds, &sampler, 1, 2);
    assert!(!same(&one, &next));
    assert_ne!(
        one.iter()
            .flat_map(|b| b.indices.clone())
            .collect::<Vec<_>>(),
        next.iter()
            .flat_map(|b| b.indices.clone())
            .collect::<Vec<_>>()
    );
    // A run resumed at epoch 1 (a new sampler, nothing loaded before) sees the same batches.
    let resumed = EpochSampler::new(ds.samples.len(), 4, 11).unwrap();
    assert!(same(&next, &epoch(&ds, &resumed, 1, 1)));
    // Another seed, other batches.
    let other = EpochSampler::new(ds.samples.len(), 4, 12).unwrap();
    assert!(!same(&one, &epoch(&ds, &other, 0, 2)));
}
