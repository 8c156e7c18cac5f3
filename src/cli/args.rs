//! The command line, declared once with clap's derive: the help text, typed values and conflicts
//! (`--greedy` vs `--temperature`) all come from these structs. Values are checked here, before any
//! model is read: numbers parse or the command fails, ranges and combinations are checked by
//! `GenerateArgs::sampling` (over the session core's checks) and the subcommands' own `validate`.
//! Groups that several commands share (`SessionArgs`, `InputArgs`, `OutArgs`) are declared once and
//! flattened into each.

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::error::{quote, Result, TfError};
use crate::session::Sampling;

#[derive(Parser, Debug)]
#[command(
    name = "tinyformer",
    version,
    about = "Tiny transformers on our own WebGPU kernels, with a CPU reference: inspect, run, evaluate, benchmark",
    disable_help_subcommand = false,
    arg_required_else_help = false
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Config, parameter count, tokenizer and memory demand of a checkpoint, as JSON
    Info(InfoArgs),
    /// Logits, every attention map and mask of one pass, as JSON
    Forward(ForwardArgs),
    /// Generates tokens (greedy or sampled), as JSON
    Generate(GenerateArgs),
    /// Cross-entropy per token and per character of a text
    Eval(EvalArgs),
    /// Logit lens, head scores, residual norms, attention entropy, surprise and ablations, as JSON
    Inspect(InspectArgs),
    /// Benchmarks, as JSON
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Trains, applies and inverts the project's tokenizers
    #[command(subcommand)]
    Tokenizer(TokenizerCommand),
    /// Trains a model on the engine's own backward passes and AdamW
    Train(crate::cli::train::TrainArgs),
    /// Every GPU kernel against its CPU twin, as JSON
    Selftest,
}

/// Where the model runs. A value enum, so a new backend is one more variant.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendChoice {
    /// our WGSL kernels through wgpu (Vulkan/Metal natively)
    Gpu,
    /// the fast CPU path: f32 SIMD kernels (src/fastcpu)
    Cpu,
    /// the plain-Rust f64 CPU reference the tests use as the oracle (src/cpu)
    Reference,
}

/// The checkpoint and how much memory it may take.
#[derive(Args, Debug)]
pub struct ModelArgs {
    /// the model: a tinyformer .safetensors checkpoint, a Hugging Face model directory (config.json,
    /// model.safetensors or shards, tokenizer.json) or its model.safetensors, or a llama2.c .bin
    #[arg(long, value_name = "PATH")]
    pub model: String,
    /// the tokenizer of a Hugging Face or llama2.c model, instead of the tokenizer.json / tokenizer.bin
    /// beside it (tokenizer.json or tokenizer.bin)
    #[arg(long, value_name = "FILE")]
    pub tokenizer: Option<String>,
    /// the most memory the model may need (weights, activations, KV caches, attention maps,
    /// logits), checked before anything is allocated: 4GiB, 512MiB, or bytes
    #[arg(long, value_name = "SIZE", default_value = "4GiB", value_parser = parse_budget)]
    pub memory_budget: u64,
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    #[command(flatten)]
    pub model: ModelArgs,
}

/// A comma-separated list of token ids, e.g. 3,1,4 (empty: no ids).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ids(pub Vec<u32>);

fn parse_ids(s: &str) -> std::result::Result<Ids, String> {
    if s.trim().is_empty() {
        return Ok(Ids(vec![]));
    }
    s.split(',')
        .map(|x| x.trim().parse::<u32>().map_err(|_| format!("{} is not a valid token id (a non-negative integer)", quote(x.trim()))))
        .collect::<std::result::Result<Vec<u32>, String>>()
        .map(Ids)
}

fn parse_budget(s: &str) -> std::result::Result<u64, String> {
    crate::model::memory::parse_bytes(s)
}

/// The model and where it runs: the start of every command that runs one.
#[derive(Args, Debug)]
pub struct SessionArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long, value_enum, default_value_t = BackendChoice::Gpu)]
    pub backend: BackendChoice,
    /// threads of the fast CPU backend (--backend cpu only), 1..=64; large products (the prefill's
    /// matmuls) are split over them, with the same results as one thread [default: 1]
    #[arg(long, value_name = "N", value_parser = parse_threads)]
    pub threads: Option<usize>,
}

fn parse_threads(s: &str) -> std::result::Result<usize, String> {
    let max = crate::fastcpu::matmul::MAX_THREADS;
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("the thread count must be an integer in 1..={max}")),
    }
}

/// One input sequence: ids or text (the source of an encoder_decoder model), and the decoder input.
#[derive(Args, Debug)]
pub struct InputArgs {
    /// input token ids (the source for an encoder_decoder model)
    #[arg(long, value_name = "3,1,4", value_parser = parse_ids, conflicts_with = "prompt")]
    pub ids: Option<Ids>,
    /// input text, encoded with the checkpoint's tokenizer
    #[arg(long, value_name = "TEXT", allow_hyphen_values = true)]
    pub prompt: Option<String>,
    /// encoder_decoder: the decoder input (default: BOS)
    #[arg(long, value_name = "1,5,9", value_parser = parse_ids)]
    pub tgt_ids: Option<Ids>,
}

/// Where the JSON goes.
#[derive(Args, Debug)]
pub struct OutArgs {
    /// write the JSON here instead of stdout
    #[arg(long, value_name = "FILE")]
    pub out: Option<String>,
}

#[derive(Args, Debug)]
pub struct ForwardArgs {
    #[command(flatten)]
    pub session: SessionArgs,
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub out: OutArgs,
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub session: SessionArgs,
    /// the prompt's token ids (encoder_decoder: the decoder's start, default BOS)
    #[arg(long, value_name = "3,1,4", value_parser = parse_ids)]
    pub ids: Option<Ids>,
    /// encoder_decoder: the source token ids
    #[arg(long, value_name = "3,1,4", value_parser = parse_ids, conflicts_with = "prompt")]
    pub src_ids: Option<Ids>,
    /// the prompt as text (encoder_decoder: the source), encoded with the checkpoint's tokenizer
    #[arg(long, value_name = "TEXT", allow_hyphen_values = true)]
    pub prompt: Option<String>,
    /// how many tokens to generate at most
    #[arg(long, value_name = "N")]
    pub max_new_tokens: usize,
    /// always take the most likely token (the default without sampling flags)
    #[arg(long, conflicts_with_all = ["temperature", "top_k", "top_p", "seed"])]
    pub greedy: bool,
    /// softmax temperature, >= 0 (0 = greedy)
    #[arg(long, value_name = "T", allow_negative_numbers = true)]
    pub temperature: Option<f32>,
    /// keep the k most likely tokens (0 = all)
    #[arg(long, value_name = "K")]
    pub top_k: Option<u32>,
    /// keep the most likely tokens whose mass reaches p, in (0, 1]
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    pub top_p: Option<f32>,
    /// random seed of the sampler
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// recompute every position at every step instead of caching keys and values
    #[arg(long)]
    pub no_kv_cache: bool,
    /// generation steps per GPU submission (1..=256): the sampled id stays on the GPU for the next step
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub tokens_per_submit: usize,
}

impl GenerateArgs {
    /// The sampling parameters, or why the combination is wrong. No flag is dropped silently:
    /// top-k / top-p with a temperature of 0 (greedy) are reported, not ignored.
    /// Ranges are the session core's check (session::Sampling::params), named by their flags here.
    pub fn sampling(&self) -> Result<Sampling> {
        let sampled = self.top_k.is_some() || self.top_p.is_some();
        let t = self.temperature.unwrap_or(if sampled { 1.0 } else { 0.0 });
        let s = Sampling { temperature: t, top_k: self.top_k.unwrap_or(0), top_p: self.top_p.unwrap_or(1.0) };
        s.params().map_err(|e| TfError::Input(format!("--{e}")))?;
        if t == 0.0 {
            let dropped: Vec<&str> =
                [(self.top_k.is_some(), "--top-k"), (self.top_p.is_some(), "--top-p"), (self.seed.is_some(), "--seed")]
                    .iter()
                    .filter(|(given, _)| *given)
                    .map(|(_, f)| *f)
                    .collect();
            if !dropped.is_empty() {
                return Err(TfError::Input(format!(
                    "--temperature 0 means greedy decoding, which ignores {}: drop {} or give a temperature > 0",
                    dropped.join(" and "),
                    if dropped.len() == 1 { "it" } else { "them" }
                )));
            }
        }
        Ok(s)
    }
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub session: SessionArgs,
    /// the text (UTF-8) to score
    #[arg(long, value_name = "FILE")]
    pub text_file: String,
}

/// `--ablate-mode`: the session's, which the page's Inspect requests name too.
pub use crate::session::AblateMode;

#[derive(Args, Debug)]
pub struct InspectArgs {
    #[command(flatten)]
    pub session: SessionArgs,
    #[command(flatten)]
    pub input: InputArgs,
    /// heads to switch off, LAYER.HEAD pairs: 0.1,2.3
    #[arg(long, value_name = "L.H,L.H")]
    pub ablate: Option<String>,
    /// how a switched-off head is replaced
    #[arg(long, value_enum, default_value_t = AblateMode::Zero)]
    pub ablate_mode: AblateMode,
    /// MoE experts to remove from routing, LAYER.EXPERT pairs: 0.1,3.2
    #[arg(long, value_name = "L.E,L.E")]
    pub remove_experts: Option<String>,
    /// decoder self-attention mask cells to block on top of its mask, QUERY.KEY pairs: 3.1,4.0
    #[arg(long, value_name = "Q.K,Q.K")]
    pub block_cells: Option<String>,
    /// encoder-decoder: cross-attention mask cells to block, QUERY.KEY (source position) pairs
    #[arg(long, value_name = "Q.K,Q.K")]
    pub block_cross_cells: Option<String>,
    /// the induction test instead: N random tokens repeated twice
    #[arg(long, value_name = "N")]
    pub induction: Option<usize>,
    /// random seed of the induction test's tokens
    #[arg(long, value_name = "S", requires = "induction")]
    pub seed: Option<u64>,
    #[command(flatten)]
    pub out: OutArgs,
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// naive vs tiled vs vec4-tiled vs register-blocked (barrier-free) matmul GFLOP/s on square
    /// problems (and the GEMV for one row)
    Matmul(BenchMatmulArgs),
    /// tokens/s cached vs uncached, GPU sampling vs logits readback, fused vs unfused kernels,
    /// dispatches per token; prefill-128 ms per prompt kernel set (tiled vs barrier-free)
    Generate(BenchGenerateArgs),
}

/// Largest square matmul the benchmark runs (three 8192^2 f32 buffers: 768 MiB).
pub const MAX_BENCH_SIZE: usize = 8192;
/// Most repetitions a benchmark runs.
pub const MAX_BENCH_REPS: usize = 10_000;

#[derive(Args, Debug)]
pub struct BenchMatmulArgs {
    /// square sizes M = K = N, each in 1..=8192
    #[arg(long, value_name = "64,128,...", value_delimiter = ',', default_value = "64,128,256,512,1024")]
    pub sizes: Vec<usize>,
    /// repetitions per timing, in 1..=10000 (default: about 50 ms of work)
    #[arg(long, value_name = "N")]
    pub reps: Option<usize>,
}

impl BenchMatmulArgs {
    pub fn validate(&self) -> Result<()> {
        if let Some(&s) = self.sizes.iter().find(|&&s| s == 0 || s > MAX_BENCH_SIZE) {
            return Err(TfError::Input(format!("--sizes: {s} is outside 1..={MAX_BENCH_SIZE}")));
        }
        check_reps(self.reps)
    }
}

fn check_reps(reps: Option<usize>) -> Result<()> {
    match reps {
        Some(r) if r == 0 || r > MAX_BENCH_REPS => Err(TfError::Input(format!("--reps: {r} is outside 1..={MAX_BENCH_REPS}"))),
        _ => Ok(()),
    }
}

#[derive(Args, Debug)]
pub struct BenchGenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// tokens to generate per run (at most the context minus the benchmark's prompt)
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub tokens: usize,
    /// runs per variant, in 1..=10000 (the best is reported)
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub reps: usize,
    /// K of the chained variant (generation steps per GPU submission, 1..=256), timed against K = 1
    #[arg(long, value_name = "K", default_value_t = 8)]
    pub tokens_per_submit: usize,
}

impl BenchGenerateArgs {
    pub fn validate(&self) -> Result<()> {
        check_reps(Some(self.reps))?;
        tokens_per_submit_flag(self.tokens_per_submit).map(|_| ())
    }
}

/// `--tokens-per-submit K`, checked by the session core's rule and named by its flag.
pub fn tokens_per_submit_flag(k: usize) -> Result<usize> {
    crate::session::check_tokens_per_submit(k).map_err(|_| {
        TfError::Input(format!("--tokens-per-submit must be between 1 and {}, got {k}", crate::session::MAX_TOKENS_PER_SUBMIT))
    })
}

#[derive(Subcommand, Debug)]
pub enum TokenizerCommand {
    /// trains a tokenizer on a text file and writes its JSON
    Train(TokTrainArgs),
    /// encodes text to ids (--out: little-endian u32, one per token, no header)
    Encode(TokEncodeArgs),
    /// decodes ids to text
    Decode(TokDecodeArgs),
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokKind {
    #[value(name = "byte_bpe")]
    ByteBpe,
    #[value(name = "char_merges")]
    CharMerges,
    #[value(name = "seed_bpe")]
    SeedBpe,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreSplitChoice {
    Words,
    None,
}

#[derive(Args, Debug)]
pub struct TokTrainArgs {
    #[arg(long, value_enum)]
    pub kind: TokKind,
    #[arg(long, value_name = "N")]
    pub vocab_size: usize,
    #[arg(long, value_name = "FILE")]
    pub text_file: String,
    #[arg(long, value_name = "tok.json")]
    pub out: String,
    /// byte_bpe only: split the text into words before counting pairs
    #[arg(long, value_enum, default_value_t = PreSplitChoice::Words)]
    pub pre_split: PreSplitChoice,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["text_file", "text"])))]
pub struct TokEncodeArgs {
    /// a tokenizer JSON, or a .safetensors checkpoint with a "tokenizer" in its metadata
    #[arg(long, value_name = "tok.json")]
    pub tokenizer: String,
    #[arg(long, value_name = "FILE")]
    pub text_file: Option<String>,
    #[arg(long, value_name = "TEXT", allow_hyphen_values = true)]
    pub text: Option<String>,
    /// write the ids here (little-endian u32) instead of into the JSON
    #[arg(long, value_name = "ids.bin")]
    pub out: Option<String>,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["ids", "ids_file"])))]
pub struct TokDecodeArgs {
    #[arg(long, value_name = "tok.json")]
    pub tokenizer: String,
    #[arg(long, value_name = "3,1,4", value_parser = parse_ids)]
    pub ids: Option<Ids>,
    /// little-endian u32 ids, one per token
    #[arg(long, value_name = "ids.bin")]
    pub ids_file: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_declaration_is_consistent() {
        Cli::command().debug_assert();
    }

    fn generate(extra: &[&str]) -> std::result::Result<GenerateArgs, clap::Error> {
        let mut argv = vec!["tinyformer", "generate", "--model", "m.safetensors", "--max-new-tokens", "4"];
        argv.extend(extra);
        match Cli::try_parse_from(argv)?.command {
            Command::Generate(g) => Ok(g),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sampling_flags_are_checked_and_never_dropped() {
        assert_eq!(generate(&[]).unwrap().sampling().unwrap(), Sampling { temperature: 0.0, top_k: 0, top_p: 1.0 });
        assert_eq!(generate(&["--top-k", "5"]).unwrap().sampling().unwrap(), Sampling { temperature: 1.0, top_k: 5, top_p: 1.0 });
        let e = generate(&["--temperature", "0", "--top-k", "5"]).unwrap().sampling().unwrap_err().to_string();
        assert_eq!(e, "--temperature 0 means greedy decoding, which ignores --top-k: drop it or give a temperature > 0");
        let e = generate(&["--temperature", "0", "--top-p", "0.5", "--seed", "3"]).unwrap().sampling().unwrap_err().to_string();
        assert!(e.contains("ignores --top-p and --seed: drop them"), "{e}");
        assert!(generate(&["--temperature", "-1"]).unwrap().sampling().unwrap_err().to_string().contains("must be a finite number >= 0"));
        assert!(generate(&["--temperature", "NaN"]).unwrap().sampling().is_err());
        assert!(generate(&["--top-p", "1.5", "--temperature", "1"]).unwrap().sampling().is_err());
        let e = generate(&["--greedy", "--top-k", "3"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
        let e = generate(&["--max-new-tokens", "5"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict, "{e}");
    }

    #[test]
    fn ids_and_sizes_parse() {
        assert_eq!(parse_ids("3, 1,4"), Ok(Ids(vec![3, 1, 4])));
        assert_eq!(parse_ids(""), Ok(Ids(vec![])));
        assert_eq!(parse_ids("3,x").unwrap_err(), "\"x\" is not a valid token id (a non-negative integer)");
        assert!(parse_ids("4294967296").is_err());
        let g = generate(&["--memory-budget", "512MiB"]).unwrap();
        assert_eq!(g.session.model.memory_budget, 512 << 20);
        assert_eq!(generate(&[]).unwrap().session.model.memory_budget, 4 << 30);
    }
}
