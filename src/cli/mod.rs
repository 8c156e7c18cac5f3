//! The `tinyformer` command line: argument parsing and the subcommands. Native only.

pub mod args;
pub mod bench;

use crate::error::{Result, TfError};
use args::Args;

pub const USAGE: &str = "usage: tinyformer <command> [options]
commands:
  bench matmul [--sizes 64,128,256,512,1024] [--reps N]   naive vs tiled matmul GFLOP/s, as JSON
  selftest                                               every GPU kernel against its CPU twin, as JSON
  help                                                   this text";

pub fn run(argv: &[String]) -> Result<String> {
    let Some(cmd) = argv.first() else { return Err(TfError::Input(format!("no command given\n{USAGE}"))) };
    let rest = &argv[1..];
    match cmd.as_str() {
        "help" | "--help" | "-h" => Ok(USAGE.to_string()),
        "bench" => {
            let Some(what) = rest.first() else { return Err(TfError::Input("bench needs a target: matmul".into())) };
            let a = Args::parse(&rest[1..])?;
            match what.as_str() {
                "matmul" => bench::matmul(&a),
                other => Err(TfError::Input(format!("unknown benchmark '{other}' (expected: matmul)"))),
            }
        }
        "selftest" => {
            Args::parse(rest)?.finish()?;
            let gpu = std::sync::Arc::new(pollster::block_on(crate::gpu::Gpu::new())?);
            let results = pollster::block_on(crate::selftest::run_all(&gpu));
            let failed = results.iter().filter(|r| !r.ok).count();
            let out = serde_json::json!({"adapter": gpu.summary, "passed": results.len() - failed, "failed": failed, "checks": results});
            if failed > 0 {
                return Err(TfError::Gpu(format!("{failed} kernel checks failed: {out}")));
            }
            Ok(serde_json::to_string_pretty(&out).unwrap_or_default())
        }
        other => Err(TfError::Input(format!("unknown command '{other}'\n{USAGE}"))),
    }
}
