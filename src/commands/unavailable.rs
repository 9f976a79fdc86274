use std::process::ExitCode;

/// Accepts any arguments so that the message below, not a usage error, is what users see.
#[derive(clap::Args)]
pub struct Args {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    rest: Vec<String>,
}

pub fn run(name: &str) -> ExitCode {
    eprintln!("illama-tools {name}: not available yet in this version (see the README's roadmap)");
    ExitCode::from(2)
}
