//! The `radmfa` command: parses arguments and hands over to `radmfa::cli`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = radmfa::cli::Cli::parse();
    match radmfa::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // `radmfa check-config | head`: the reader left; nothing more to say to it.
        Err(e) if e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("radmfa: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
