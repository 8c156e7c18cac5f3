//! The native CLI. Every failure is one line on stderr and a non-zero exit, never a panic trace.

use std::process::ExitCode;

use tinyformer::cli;

fn main() -> ExitCode {
    // Mesa's Vulkan loader warns on every start when XDG_RUNTIME_DIR is unset (containers, CI).
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir());
    }
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
