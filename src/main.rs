//! The `illama-tools` command line: argument parsing and printing only; the work is done by the
//! library crates under `crates/`.

mod commands;
mod progress;
mod size;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "illama-tools",
    version,
    about = "Weight selection, checkpoint conversion, training and evaluation for iLLaMA",
    long_about = "Tools for iLLaMA, the vision transformer built from LLaMA decoder blocks \
                  (arXiv 2404.06773): inspect and convert PyTorch/safetensors checkpoints, select \
                  iLLaMA weights from LLaMA checkpoints, evaluate and fine-tune.",
    after_help = "Examples:\n  illama-tools inspect model.pth\n  illama-tools convert model.pth --verify\n  illama-tools convert checkpoint-best.pth --key model_ema -o ema.safetensors"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Inspect(commands::inspect::Args),
    Convert(commands::convert::Args),
    Select(commands::select::Args),
    Logits(commands::logits::Args),
    Verify(commands::verify::Args),
    Predict(commands::predict::Args),
    Finetune(Box<commands::finetune::Args>),
    Quickstart(commands::quickstart::Args),
    BenchTrain(commands::bench_train::Args),
}

fn main() -> ExitCode {
    // Like other Unix tools, end quietly when the reader of our output goes away (`| head`).
    // SAFETY: setting a signal disposition to its default at startup, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    remove_partial_outputs_on_signals();
    // Model commands allocate large activation buffers over and over: keep freed ones for reuse.
    illama_model::keep_freed_memory();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(a) => commands::inspect::run(a),
        Command::Convert(a) => commands::convert::run(a),
        Command::Select(a) => commands::select::run(a),
        Command::Logits(a) => commands::logits::run(a),
        Command::Verify(a) => commands::verify::run(a),
        Command::Predict(a) => commands::predict::run(a),
        Command::Finetune(a) => commands::finetune::run(*a),
        Command::Quickstart(a) => commands::quickstart::run(a),
        Command::BenchTrain(a) => commands::bench_train::run(a),
    };
    for n in illama_formats::output::take_notices() {
        eprintln!("note: {n}");
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_text(&e));
            if let Some(h) = hint(&e) {
                eprintln!("hint: {h}");
            }
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, `: `-separated, each cause once: library errors often say their
/// cause in their own message already (`"{path}: {source}"`), and anyhow's `{:#}` would repeat it.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if text.contains(&s) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&s);
    }
    text
}

/// What a user can do about a failure, in terms of this command line's flags (the libraries
/// name no flags).
fn hint(e: &anyhow::Error) -> Option<&'static str> {
    use illama_data::LoaderError;
    use illama_formats::FormatError;
    const FORCE: &str = "add --force to replace it (only a regular file, never an input)";
    const SKIP: &str = "--skip-bad leaves unreadable images out and lists them";
    // Wrapping errors are transparent (they show and chain through the inner error's text), so
    // the inner error is found by matching the wrappers too.
    e.chain().find_map(|cause| {
        let format = cause.downcast_ref::<FormatError>().or_else(|| match cause
            .downcast_ref::<illama_select::SelectError>(
        ) {
            Some(illama_select::SelectError::Format(f)) => Some(f),
            _ => None,
        });
        let loader = cause.downcast_ref::<LoaderError>().or_else(|| match cause
            .downcast_ref::<illama_train::EvalError>(
        ) {
            Some(illama_train::EvalError::Loader(l)) => Some(l),
            _ => None,
        });
        if let Some(illama_data::DatasetError::DevkitSynsetsNeeded(_)) = cause.downcast_ref() {
            return Some("pass the synset list with --devkit-synsets FILE");
        }
        match (format, loader) {
            (Some(FormatError::OutputExists { .. }), _) => Some(FORCE),
            (Some(FormatError::Gguf { .. }), _) => Some(
                "`illama-tools inspect FILE.gguf` lists its tensors; `illama-tools select --from FILE.gguf` selects iLLaMA weights from it",
            ),
            (_, Some(LoaderError::Image(_))) => Some(SKIP),
            _ => None,
        }
    })
}

/// On SIGINT, SIGTERM or SIGHUP, removes the outputs being written (their temporary files) and
/// then dies of the signal as if unhandled, so that an interrupted run leaves nothing behind.
fn remove_partial_outputs_on_signals() {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
        return;
    };
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            for n in illama_formats::output::take_notices() {
                eprintln!("note: {n}");
            }
            for p in illama_formats::output::stop_outputs() {
                eprintln!("interrupted: removed the unfinished {}", p.display());
            }
            let _ = signal_hook::low_level::emulate_default_handler(sig);
            std::process::exit(128 + sig);
        }
    });
}
