//! The `radmfa` command: parses arguments and hands over to `radmfa::cli`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = radmfa::cli::Cli::parse();
    match radmfa::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("radmfa: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
