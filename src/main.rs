//! The `hallpass` binary: parse the command line and run it.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = hallpass::cli::Cli::parse();
    match hallpass::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hallpass: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
