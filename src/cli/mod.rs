//! The `tinyformer` command line: arguments (clap derive, src/cli/args.rs) and the subcommands, a
//! thin layer over the session core (src/session/).
//! Native only. Every failure is one line: clap's errors are folded into one, files are checked
//! before they are read, and sizes are bounded before anything is allocated.

pub mod args;
pub mod bench;
pub mod inspect;
pub mod model_cmds;
pub mod tok;
pub mod train;

use std::ffi::OsString;
use std::io::Read;

use clap::error::ErrorKind;
use clap::Parser;

use crate::error::{quote, Result, TfError};
use args::{BenchCommand, Cli, Command};

/// Largest text file `eval` and `tokenizer` read.
pub const MAX_TEXT_BYTES: u64 = 64 << 20;
/// Largest tokenizer JSON read.
pub const MAX_TOKENIZER_BYTES: u64 = 256 << 20;

/// Runs the command line `argv` (program name first, as `std::env::args_os` gives it). Ok holds what
/// to print on stdout (the help text included).
pub fn run<I, T>(argv: I) -> Result<String>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
    let cli = match Cli::try_parse_from(&argv) {
        Ok(c) => c,
        Err(e) => return clap_outcome(e, &argv),
    };
    match cli.command {
        Command::Info(a) => model_cmds::info(&a),
        Command::Forward(a) => model_cmds::forward(&a),
        Command::Generate(a) => model_cmds::generate(&a),
        Command::Eval(a) => model_cmds::eval(&a),
        Command::Inspect(a) => inspect::inspect(&a),
        Command::Bench(BenchCommand::Matmul(a)) => bench::matmul(&a),
        Command::Bench(BenchCommand::Generate(a)) => bench::generate(&a),
        Command::Tokenizer(t) => tok::run(&t),
        Command::Train(a) => train::train(&a),
        Command::Selftest => selftest(),
    }
}

/// Help and version go to stdout; every other clap error becomes one line.
fn clap_outcome(e: clap::Error, argv: &[OsString]) -> Result<String> {
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => return Ok(e.render().to_string().trim_end().to_string()),
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand | ErrorKind::MissingSubcommand => {
            if argv.len() <= 1 {
                return Err(TfError::Input("no command given (tinyformer help lists the commands)".into()));
            }
            let words: Vec<String> = argv[1..].iter().map(|a| a.to_string_lossy().into_owned()).collect();
            let cmd = words.join(" ");
            return Err(TfError::Input(format!("'{cmd}' needs a subcommand (tinyformer {cmd} --help lists them)")));
        }
        _ => {}
    }
    let flat = flatten_clap(&e);
    let msg = match e.kind() {
        ErrorKind::InvalidSubcommand => format!("unknown command: {flat} (tinyformer help lists the commands)"),
        ErrorKind::UnknownArgument => format!("unknown flag or argument: {flat}"),
        ErrorKind::InvalidUtf8 => format!("{flat}: tinyformer reads its arguments as UTF-8 text"),
        _ => flat,
    };
    Err(TfError::Input(msg))
}

/// clap's message without its "Usage:" block, on one line: "error: the following required
/// arguments were not provided:\n  --max-new-tokens <N>" -> "the following ... provided: --max-new-tokens <N>".
fn flatten_clap(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let mut parts = Vec::new();
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with("Usage:") || l.starts_with("For more information") {
            break;
        }
        if !l.is_empty() {
            parts.push(l.strip_prefix("error: ").unwrap_or(l).to_string());
        }
    }
    parts.join(" ")
}

fn selftest() -> Result<String> {
    let gpu = std::sync::Arc::new(pollster::block_on(crate::gpu::Gpu::new())?);
    let results = pollster::block_on(crate::selftest::run_all(&gpu));
    let failed = results.iter().filter(|r| !r.ok).count();
    let out = serde_json::json!({"adapter": gpu.summary, "passed": results.len() - failed, "failed": failed, "checks": results});
    if failed > 0 {
        let names: Vec<String> = results
            .iter()
            .filter(|r| !r.ok)
            .take(5)
            .map(|r| format!("{} (max |diff| {:e}, {})", r.name, r.max_abs_diff, r.tolerance))
            .collect();
        return Err(TfError::Gpu(format!("{failed} kernel checks failed: {}", names.join("; "))));
    }
    Ok(serde_json::to_string_pretty(&out).unwrap_or_default())
}

/// Reads an input file whole, after checking that it is a regular file (not a directory, a FIFO that
/// would block, or a device such as /dev/zero that never ends) of at most `cap` bytes, into a
/// fallibly reserved buffer. `what` names the flag for the messages ("--model").
pub fn read_input(path: &str, what: &str, cap: u64, cap_hint: &str) -> Result<Vec<u8>> {
    let shown = quote(path);
    let meta = std::fs::metadata(path).map_err(|e| TfError::Input(format!("cannot read {what} {shown}: {e}")))?;
    let ft = meta.file_type();
    if ft.is_dir() {
        return Err(TfError::Input(format!("{what} {shown} is a directory: give the file itself")));
    }
    if !ft.is_file() {
        return Err(TfError::Input(format!("{what} {shown} is not a regular file (a device, FIFO or socket): give a file")));
    }
    if meta.len() > cap {
        return Err(TfError::Input(format!("{what} {shown} is {} bytes, over the limit of {} bytes ({cap_hint})", meta.len(), cap)));
    }
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(meta.len() as usize).map_err(|_| {
        TfError::Memory(format!("out of memory: reading {what} {shown} needs {} bytes and the allocation failed", meta.len()))
    })?;
    let f = std::fs::File::open(path).map_err(|e| TfError::Input(format!("cannot read {what} {shown}: {e}")))?;
    // take(cap + 1): a file that grows while it is read is still bounded
    f.take(cap + 1).read_to_end(&mut bytes).map_err(|e| TfError::Input(format!("cannot read {what} {shown}: {e}")))?;
    if bytes.len() as u64 > cap {
        return Err(TfError::Input(format!("{what} {shown} grew past the limit of {cap} bytes while it was read")));
    }
    Ok(bytes)
}

/// A UTF-8 text file of at most MAX_TEXT_BYTES.
pub fn read_text(path: &str, what: &str) -> Result<String> {
    let bytes = read_input(path, what, MAX_TEXT_BYTES, "text inputs are capped at 64 MiB")?;
    String::from_utf8(bytes)
        .map_err(|e| TfError::Input(format!("{what} {} is not valid UTF-8 (byte {})", quote(path), e.utf8_error().valid_up_to())))
}
