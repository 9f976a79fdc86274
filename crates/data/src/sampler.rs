//! Seeded epochs: the order in which a training run visits its images, and the random streams
//! that augment them, as pure functions of `(seed, epoch, ...)`.
//!
//! Nothing here depends on worker count, timing or what ran before: epoch `k` of a run resumed at
//! epoch `k` sees exactly the batches, and every image exactly the augmentation, of an
//! uninterrupted run with the same seed. The reference shuffles with torch's generator seeded by
//! `seed + epoch` (`DistributedSampler.set_epoch`) and keeps only full batches (`drop_last`);
//! ours does the same with its own generator (ChaCha8, stable across platforms and versions of
//! the `rand_chacha` crate), so the order differs from torch's but not its distribution.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Which random stream a key is for, so that the order of an epoch, the augmentation of an image
/// and the mixing of a batch never share random numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Stream {
    /// The permutation of an epoch.
    Order = 1,
    /// The augmentation of one image (stream index: the image's dataset index).
    Image = 2,
    /// Mixup/CutMix of one batch (stream index: the batch's position in the epoch).
    Batch = 3,
    /// What the consumer of a batch draws for it (the trainer's stochastic depth; stream
    /// index: the batch's position in the epoch).
    Consumer = 4,
}

/// A generator for `(seed, epoch, stream, index)`: a ChaCha8 key derived from the first three
/// and the fourth as ChaCha's stream number, so that generators for different images are
/// independent and cheap to make.
pub fn rng_for(seed: u64, epoch: u64, stream: Stream, index: u64) -> ChaCha8Rng {
    // SplitMix64 over (seed, epoch, stream): each key word depends on all three.
    let mut state = seed;
    let mut key = [0u8; 32];
    for (i, chunk) in key.chunks_exact_mut(8).enumerate() {
        state ^= match i {
            1 => epoch,
            2 => stream as u64,
            _ => 0,
        };
        chunk.copy_from_slice(&splitmix64(&mut state).to_le_bytes());
    }
    let mut rng = ChaCha8Rng::from_seed(key);
    rng.set_stream(index);
    rng
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SamplerError {
    #[error("batch size must be at least 1")]
    ZeroBatch,
    #[error("{len} images cannot fill one batch of {batch_size} (the last partial batch is dropped, as the reference does)")]
    TooFewImages { len: usize, batch_size: usize },
}

/// Shuffled full batches of dataset indices, epoch by epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochSampler {
    len: usize,
    batch_size: usize,
    seed: u64,
}

impl EpochSampler {
    /// `len` images in batches of `batch_size`; the last partial batch of each epoch is dropped.
    pub fn new(len: usize, batch_size: usize, seed: u64) -> Result<Self, SamplerError> {
        if batch_size == 0 {
            return Err(SamplerError::ZeroBatch);
        }
        if len < batch_size {
            return Err(SamplerError::TooFewImages { len, batch_size });
        }
        Ok(EpochSampler {
            len,
            batch_size,
            seed,
        })
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Full batches per epoch (`len // batch_size`).
    pub fn batches_per_epoch(&self) -> usize {
        self.len / self.batch_size
    }

    /// The epoch's permutation of `0..len`.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.len).collect();
        order.shuffle(&mut rng_for(self.seed, epoch, Stream::Order, 0));
        order
    }

    /// The epoch's batches, each `batch_size` dataset indices.
    pub fn batches(&self, epoch: u64) -> Vec<Vec<usize>> {
        let order = self.order(epoch);
        order
            .chunks_exact(self.batch_size)
            .map(<[usize]>::to_vec)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn epochs_are_permutations_that_differ_and_repeat_exactly() {
        let s = EpochSampler::new(1000, 64, 7).unwrap();
        assert_eq!(s.batches_per_epoch(), 15);
        let e0 = s.order(0);
        let mut sorted = e0.clone();
        sorted.sort();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        assert_ne!(e0, s.order(1), "epochs must differ");
        assert_ne!(e0, EpochSampler::new(1000, 64, 8).unwrap().order(0));
        assert_eq!(e0, s.order(0), "a resumed epoch is the same epoch");
        let b = s.batches(3);
        assert_eq!(b.len(), 15);
        assert!(b.iter().all(|x| x.len() == 64));
        assert_eq!(b.concat(), s.order(3)[..960]);
    }

    #[test]
    fn streams_are_independent_and_reproducible() {
        let draw = |seed, epoch, stream, index| -> Vec<u32> {
            let mut r = rng_for(seed, epoch, stream, index);
            (0..4).map(|_| r.random()).collect()
        };
        let a = draw(0, 0, Stream::Image, 5);
        assert_eq!(a, draw(0, 0, Stream::Image, 5));
        for other in [
            draw(0, 0, Stream::Image, 6),
            draw(0, 1, Stream::Image, 5),
            draw(1, 0, Stream::Image, 5),
            draw(0, 0, Stream::Batch, 5),
        ] {
            assert_ne!(a, other);
        }
    }

    #[test]
    fn shuffles_are_uniform() {
        // Where does element 0 land, over many epochs? Each of 8 positions about equally often.
        let s = EpochSampler::new(8, 1, 3).unwrap();
        let mut counts = [0usize; 8];
        for epoch in 0..8000 {
            let pos = s.order(epoch).iter().position(|&i| i == 0).unwrap();
            counts[pos] += 1;
        }
        // Chi-square with 7 degrees of freedom; 24.3 is the 0.001 critical value.
        let chi2: f64 = counts
            .iter()
            .map(|&c| (c as f64 - 1000.0).powi(2) / 1000.0)
            .sum();
        assert!(chi2 < 24.3, "{counts:?} chi2 {chi2}");
    }

    #[test]
    fn too_few_images_or_a_zero_batch_are_errors() {
        assert_eq!(EpochSampler::new(5, 0, 0), Err(SamplerError::ZeroBatch));
        assert!(matches!(
            EpochSampler::new(5, 8, 0),
            Err(SamplerError::TooFewImages { .. })
        ));
    }
}
