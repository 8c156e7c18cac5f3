//! The native CLI. Every failure is one line on stderr and a non-zero exit, never a panic trace.

use std::process::ExitCode;

use tinyformer::cli;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match cli::run(&args) {
        Ok(out) => {
            if !out.is_empty() {
                println!("{out}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tinyformer: {e}");
            ExitCode::from(2)
        }
    }
}
