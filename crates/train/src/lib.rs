//! Evaluation (and, with the recipe, training) of iLLaMA: feeds batches from `data` to a
//! `model` and keeps the numbers. It owns metrics and loops; it knows nothing of file formats.

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

pub use eval::{evaluate, EvalError, EvalReport};
pub use metrics::MetricsError;
