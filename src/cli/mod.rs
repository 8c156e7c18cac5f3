//! The `tinyformer` command line: argument parsing and the subcommands. Native only.

pub mod args;
pub mod bench;
pub mod model_cmds;
pub mod tok;

use crate::error::{Result, TfError};
use args::Args;

pub const USAGE: &str = "usage: tinyformer <command> [options]
commands:
  info --model F                                          config, parameter count, tokenizer
  forward --model F (--ids 3,1,4 | --prompt TEXT) [--tgt-ids 1,5,9] [--backend gpu|cpu] [--out FILE]
                                                         logits, every attention map and mask, as JSON
  generate --model F (--ids .. | --prompt TEXT) [--src-ids .. for encoder_decoder] --max-new-tokens N
           [--greedy | --temperature T --top-k K --top-p P --seed S] [--no-kv-cache] [--backend gpu|cpu]
  eval --model F --text-file T [--backend gpu|cpu]       cross-entropy per token and per character
  bench matmul [--sizes 64,128,256,512,1024] [--reps N]   naive vs tiled vs tiled4 matmul GFLOP/s, as JSON
  bench generate --model F [--tokens N] [--reps N]       tokens/s cached vs uncached, GPU sampling vs readback
  tokenizer train --kind byte_bpe|char_merges|seed_bpe --vocab-size N --text-file F --out tok.json
  tokenizer encode --tokenizer tok.json (--text-file F | --text T) [--out ids.bin]   (ids: little-endian u32)
  tokenizer decode --tokenizer tok.json (--ids 3,1,4 | --ids-file ids.bin)
  selftest                                               every GPU kernel against its CPU twin, as JSON
  help                                                   this text";

pub fn run(argv: &[String]) -> Result<String> {
    let Some(cmd) = argv.first() else { return Err(TfError::Input("no command given (tinyformer help lists the commands)".into())) };
    let rest = &argv[1..];
    match cmd.as_str() {
        "help" | "--help" | "-h" => Ok(USAGE.to_string()),
        "bench" => {
            let Some(what) = rest.first() else { return Err(TfError::Input("bench needs a target: matmul".into())) };
            let a = Args::parse(&rest[1..])?;
            match what.as_str() {
                "matmul" => bench::matmul(&a),
                "generate" => model_cmds::bench_generate(&a),
                other => Err(TfError::Input(format!("unknown benchmark '{other}' (expected: matmul, generate)"))),
            }
        }
        "tokenizer" => tok::run(rest),
        "info" => model_cmds::info(&Args::parse(rest)?),
        "forward" => model_cmds::forward(&Args::parse(rest)?),
        "generate" => model_cmds::generate(&Args::parse(rest)?),
        "eval" => model_cmds::eval(&Args::parse(rest)?),
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
        other => Err(TfError::Input(format!("unknown command '{other}' (tinyformer help lists the commands)"))),
    }
}
