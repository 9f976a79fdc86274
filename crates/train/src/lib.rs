//! Evaluation and training of iLLaMA with the paper's recipe: feeds batches from `data` to a
//! `model` and keeps the numbers. It owns metrics, losses, the optimiser, schedules, the epoch
//! and run loops and the run folder (checkpoints, `log.txt`, `curves.svg`). It reads and writes
//! files only through `formats` (its output policy and tensor store), and knows nothing of
//! images on disk (that is `data`) or of the network's internals (that is `model`).

pub mod checkpoint;
pub mod clip;
pub mod curves;
pub mod epoch;
pub mod eval;
pub mod finetune;
pub mod loss;
pub mod metrics;
pub mod optim;
pub mod run;
pub mod schedule;
pub mod step_timing;

pub use eval::{evaluate, EvalError, EvalReport};
pub use metrics::MetricsError;
