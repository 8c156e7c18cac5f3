//! The native CLI. Every failure is one line on stderr and a non-zero exit, never a panic trace.

use std::process::ExitCode;

use tinyformer::cli;

fn main() -> ExitCode {
    // Mesa's Vulkan loader warns on every start when XDG_RUNTIME_DIR is unset (containers, CI).
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir());
    }
    // args_os: a non-UTF-8 argument is an error from the parser, not a panic in std::env::args
    match cli::run(std::env::args_os()) {
        Ok(out) => {
            // A closed pipe (`tinyformer info ... | head`) ends the output quietly, as other CLIs
            // do; println! would panic on it.
            if !out.is_empty() {
                use std::io::Write;
                let mut stdout = std::io::stdout().lock();
                if let Err(e) = writeln!(stdout, "{out}").and_then(|_| stdout.flush()) {
                    if e.kind() != std::io::ErrorKind::BrokenPipe {
                        eprintln!("tinyformer: could not write the output: {e}");
                        return ExitCode::from(2);
                    }
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tinyformer: {}", tinyformer::error::one_line(&e.to_string()));
            ExitCode::from(2)
        }
    }
}
