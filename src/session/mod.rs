//! One session core for the page (src/wasm/) and the command line (src/cli): a model loaded on any
//! backend (the GPU, the fast CPU path, the CPU reference), with the model card, tokenizing, the
//! prompt's ids and context limits, forward passes with maps, next-token candidates, generation step
//! by step, evaluation and inspection. Everything it returns is a plain Rust value or a serde struct;
//! src/wasm/ and the CLI only (de)serialize. Native and wasm.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Result, TfError};
use crate::fastcpu::FastCpuBackend;
use crate::formats::Files;
use crate::gpu::Gpu;
use crate::mask::{self, Mask};
use crate::model::config::{Arch, ModelConfig};
use crate::model::inspect::{Ablation, InductionTest, PageOpts, Report};
use crate::model::memory::{self, Budget, WeightCopies};
use crate::model::run::{top_candidates, ForwardOut, GenConfig, Generation, StopReason, BOS_ID};
use crate::model::{Backend, CpuBackend, GpuBackend, Model};
use crate::ops::SampleParams;
use crate::tokenizer::{StreamDecoder, Tokenizer};

/// Where a session's model runs.
#[derive(Clone)]
pub enum Device {
    /// our WGSL kernels through wgpu (WebGPU in the browser, Vulkan/Metal natively)
    Gpu(Arc<Gpu>),
    /// the fast CPU backend (src/fastcpu): the page's CPU path and `--backend cpu`
    Cpu,
    /// the plain-Rust reference (src/cpu), the oracle the others are tested against
    Reference,
}

/// The model on its backend: one variant per backend, so that every method below is written once
/// (`with_model!`) and monomorphised per backend.
enum Engine {
    Gpu(GpuBackend, Model<GpuBackend>),
    Cpu(FastCpuBackend, Model<FastCpuBackend>),
    Reference(CpuBackend, Model<CpuBackend>),
}

macro_rules! with_model {
    ($engine:expr, |$b:ident, $m:ident| $body:expr) => {
        match $engine {
            Engine::Gpu($b, $m) => $body,
            Engine::Cpu($b, $m) => $body,
            Engine::Reference($b, $m) => $body,
        }
    };
}

/// A generation in progress, with the decoder that turns its ids into text as they come.
struct Running {
    generation: Generation,
    text: Option<StreamDecoder>,
}

/// A loaded model and, at most, one generation in progress.
pub struct Session {
    engine: Engine,
    file_size: usize,
    running: Option<Running>,
    origin: Origin,
    /// ids that end a generation (the model's EOS; see `foreign_eos`); empty for our own checkpoints,
    /// whose encoder-decoder stops at its EOS in model::run
    eos: Vec<u32>,
}

/// Where the loaded model came from: what `info` and the model card say about its files.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Origin {
    /// "tinyformer" (our .safetensors), "huggingface" (a model directory) or "llama2c" (model.bin)
    pub format: &'static str,
    /// the architecture as the files name it ("GPT2LMHeadModel", "LlamaForCausalLM"); None for ours
    #[serde(skip_serializing_if = "Option::is_none")]
    pub declared: Option<String>,
    /// the family we run it as: "gpt2", "llama", "qwen2"
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family: Option<&'static str>,
    /// the model's files and, apart, the tokenizer's
    pub files: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokenizer_file: Option<String>,
}

/// The sampler's settings as a person gives them (temperature 0 = greedy), checked once here for the
/// page and the command line.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(default)]
pub struct Sampling {
    pub temperature: f32,
    /// 0 = off
    pub top_k: u32,
    /// 1 = off
    pub top_p: f32,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling { temperature: 0.0, top_k: 0, top_p: 1.0 }
    }
}

impl Sampling {
    /// The sampler's parameters, or why the settings are out of range.
    pub fn params(&self) -> Result<SampleParams> {
        let (t, p) = (self.temperature, self.top_p);
        if !(t >= 0.0 && t.is_finite()) {
            return Err(TfError::Input(format!("temperature must be a finite number >= 0, got {t}")));
        }
        if !(p > 0.0 && p <= 1.0) {
            return Err(TfError::Input(format!("top-p must be in (0, 1], got {p}")));
        }
        Ok(if t == 0.0 { SampleParams::greedy() } else { SampleParams { temperature: t, top_k: self.top_k, top_p: p } })
    }
}

/// The page's generation options; every field may be left out.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct GenOptions {
    pub max_new_tokens: Option<usize>,
    /// 0 (the default) = greedy
    pub temperature: Option<f32>,
    pub top_k: Option<u32>,
    pub top_p: Option<f32>,
    pub seed: Option<u64>,
    pub kv_cache: Option<bool>,
    /// read back each step's attention rows
    pub attention: Option<bool>,
    /// the layers whose rows `attention` reads back (the attention view's); default every layer
    pub map_layers: Option<Vec<usize>>,
    /// report the N most likely tokens of each step
    pub top: Option<usize>,
    /// past the context, keep going on the newest tokens (a too-long prompt is cut to its tail)
    pub sliding_window: Option<bool>,
    /// generation steps per GPU submission (model::chain; default 1)
    pub tokens_per_submit: Option<usize>,
    /// read back each step's MoE routing
    pub moe: Option<bool>,
}

impl GenOptions {
    pub fn sampling(&self) -> Sampling {
        let d = Sampling::default();
        Sampling {
            temperature: self.temperature.unwrap_or(d.temperature),
            top_k: self.top_k.unwrap_or(d.top_k),
            top_p: self.top_p.unwrap_or(d.top_p),
        }
    }

    pub fn config(&self) -> Result<GenConfig> {
        Ok(GenConfig {
            max_new_tokens: self.max_new_tokens.unwrap_or(64),
            sample: self.sampling().params()?,
            seed: self.seed.unwrap_or(0),
            kv_cache: self.kv_cache.unwrap_or(true),
            gpu_sampling: true,
            attention: self.attention.unwrap_or(false),
            map_layers: crate::model::state::MapLayers::from_list(self.map_layers.as_deref()),
            top: self.top.unwrap_or(0),
            sliding_window: self.sliding_window.unwrap_or(false),
            constraint: None,
            tokens_per_submit: check_tokens_per_submit(self.tokens_per_submit.unwrap_or(1))?,
            pipeline: true,
            moe: self.moe.unwrap_or(false),
            stop_ids: Vec::new(),
        })
    }
}

/// The most generation steps one GPU submission may hold (`--tokens-per-submit`, the page's K).
pub const MAX_TOKENS_PER_SUBMIT: usize = 256;

/// K of `--tokens-per-submit` / the page's `tokens_per_submit`, or why it is out of range.
pub fn check_tokens_per_submit(k: usize) -> Result<usize> {
    if !(1..=MAX_TOKENS_PER_SUBMIT).contains(&k) {
        return Err(TfError::Input(format!("tokens per submission must be between 1 and {MAX_TOKENS_PER_SUBMIT}, got {k}")));
    }
    Ok(k)
}

/// A tokenizer in one line: what `info` and the model card show.
#[derive(Clone, Debug, Serialize)]
pub struct TokenizerCard {
    pub kind: &'static str,
    pub vocab_size: usize,
    pub merges: usize,
}

impl From<&Tokenizer> for TokenizerCard {
    fn from(t: &Tokenizer) -> Self {
        TokenizerCard { kind: t.kind(), vocab_size: t.vocab_size(), merges: t.num_merges() }
    }
}

/// The model card: what the page shows about the loaded model.
#[derive(Clone, Debug, Serialize)]
pub struct Card<'a> {
    pub arch: &'static str,
    pub parameters: u64,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub d_model: usize,
    /// H: d_ff, or the Llama's hidden size
    pub d_ff: usize,
    pub experts: Option<usize>,
    pub top_k: Option<usize>,
    /// the decoder's input ids and the logits
    pub vocab_size: usize,
    pub src_vocab_size: usize,
    pub tgt_vocab_size: usize,
    pub context: usize,
    pub file_size: usize,
    pub tokenizer: Option<TokenizerCard>,
    pub backend: &'static str,
    pub config: &'a ModelConfig,
    /// the files it came from (format, declared architecture)
    pub origin: &'a Origin,
    /// the ids that end a generation
    pub eos: &'a [u32],
}

/// Text as tokens: ids, visible pieces, and for a tokenizer's output the byte spans and the char
/// offsets of characters outside its table. `kind` is "ids" for ids typed by hand.
#[derive(Clone, Debug, Serialize)]
pub struct Tokens {
    pub kind: &'static str,
    pub ids: Vec<u32>,
    pub pieces: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spans: Option<Vec<(usize, usize)>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown: Option<Vec<usize>>,
}

/// The prompt box read as the model's input: its tokens and how they fit the context.
#[derive(Clone, Debug, Serialize)]
pub struct Prompt {
    #[serde(flatten)]
    pub tokens: Tokens,
    /// S, the model's context
    pub context: usize,
    /// a forward pass can show it (an encoder-decoder's source must fit the context; a decoder's
    /// analysis covers the newest tokens that fit)
    pub fits: bool,
    /// generation can start without a sliding window: room for at least one new token
    pub room: bool,
    /// how many of the newest tokens a sliding window keeps of a prompt without room
    pub keep_last: usize,
}

/// The sequence one analysis pass reads after a prompt and the tokens generated after it.
#[derive(Clone, Debug, Serialize)]
pub struct Window {
    /// the forward pass's ids (the encoder-decoder's source)
    pub ids: Vec<u32>,
    /// the encoder-decoder's decoder input: the start token, then what was generated
    pub tgt: Option<Vec<u32>>,
    /// tokens of the sequence before the window (past the context with a sliding window)
    pub offset: usize,
    /// the decoder's start length: step s was chosen by the row start_len + s - 1 - offset
    pub start_len: usize,
}

/// A next-token candidate: id, probability after temperature / top-k / top-p, display string.
#[derive(Clone, Debug, Serialize)]
pub struct Candidate {
    pub id: u32,
    pub p: f32,
    pub piece: String,
}

/// One generated token.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub id: u32,
    /// 0 for the first generated token
    pub step: u64,
    /// the first token of the sequence this pass read
    pub window_start: usize,
    /// the characters this token completes (special ids add none)
    pub text: String,
    pub piece: String,
    pub done: bool,
    /// this step's attention rows (when asked for)
    #[serde(skip)]
    pub attention: Vec<crate::model::run::AttnMap>,
    /// the most likely tokens (when asked for)
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub top: Vec<Candidate>,
    /// this step's MoE routing (when asked for)
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub moe: Vec<crate::model::run::MoeRecord>,
    /// how many generation steps the GPU submission that computed this token held (model::chain)
    pub batch: usize,
}

/// The end of a generation: the characters still held by the decoder, and why it ended.
#[derive(Clone, Debug, Serialize)]
pub struct Finished {
    pub done: bool,
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<StopReason>,
}

pub enum Next {
    Token(Step),
    Finished(Finished),
}

impl Session {
    /// Parses, validates and uploads a checkpoint within `budget`. On the GPU, allocation failures
    /// (out of memory, limits) come back as errors, so a caller's previous session stays usable.
    pub async fn load(device: &Device, bytes: &[u8], budget: &Budget) -> Result<Session> {
        let engine = match device {
            Device::Gpu(g) => {
                if g.is_lost() {
                    return Err(TfError::Gpu("the GPU device was lost; reload the page to get a new one".into()));
                }
                let mut b = GpuBackend::new(g.clone());
                let budget = &budget.with_limits(g.buffer_limits()); // one buffer over the binding limit is refused by name
                let mut m = g.scoped(|| Model::load_within(&b, bytes, budget)).await;
                if b.widen16 && matches!(m, Err(TfError::Memory(_))) {
                    // a CPU-type adapter widens 16-bit weights for speed; where the widened model is over
                    // the budget or a limit, the 16-bit one may still fit: keep them 16-bit instead
                    b.widen16 = false;
                    m = g.scoped(|| Model::load_within(&b, bytes, budget)).await;
                }
                Engine::Gpu(b, m?)
            }
            Device::Cpu => Engine::Cpu(FastCpuBackend::default(), Model::load_within(&FastCpuBackend::default(), bytes, budget)?),
            Device::Reference => Engine::Reference(CpuBackend, Model::load_within(&CpuBackend, bytes, budget)?),
        };
        let origin = Origin { format: "tinyformer", ..Origin::default() };
        Ok(Session { engine, file_size: bytes.len(), running: None, origin, eos: vec![] })
    }

    pub fn config(&self) -> &ModelConfig {
        with_model!(&self.engine, |_b, m| &m.cfg)
    }

    fn is_encdec(&self) -> bool {
        self.config().arch == Arch::EncoderDecoder
    }

    /// "gpu" | "cpu" | "reference"
    pub fn backend(&self) -> &'static str {
        with_model!(&self.engine, |b, _m| b.kind())
    }

    pub fn parameters(&self) -> u64 {
        with_model!(&self.engine, |_b, m| m.params)
    }

    /// Benchmarks: fused epilogues/norms on or off and the kernel of few-row matmuls ("gemv",
    /// "naive" or "rows": one invocation per output, no barriers) of a model on the GPU.
    pub fn set_gpu_kernels(&mut self, fused: bool, few_rows: &str) -> Result<()> {
        use crate::gpu::matmul::MatmulKind;
        let kind = match few_rows {
            "gemv" => MatmulKind::Gemv,
            "naive" => MatmulKind::Naive,
            "rows" => MatmulKind::Rows,
            other => return Err(TfError::Input(format!("few_rows must be \"gemv\", \"naive\" or \"rows\", got {other:?}"))),
        };
        let b = self.gpu_backend().ok_or_else(|| TfError::Input("no model is loaded on the GPU".into()))?;
        (b.fused, b.small_matmul_kind) = (fused, kind);
        Ok(())
    }

    /// The fast CPU backend's thread count (`--threads`; 1 by default, and always in the page): a
    /// dedicated pool for its large products (src/fastcpu/matmul.rs). The other backends take 1 only.
    pub fn set_cpu_threads(&mut self, n: usize) -> Result<()> {
        match &mut self.engine {
            Engine::Cpu(b, _) => b.threads = crate::fastcpu::matmul::Threads::new(n)?,
            _ if n == 1 => {}
            _ => return Err(TfError::Input(format!("threads are for the fast CPU backend (--backend cpu), not {}", self.backend()))),
        }
        Ok(())
    }

    /// The GPU backend, to pick its kernels (benchmarks); None on the CPU paths.
    pub fn gpu_backend(&mut self) -> Option<&mut GpuBackend> {
        match &mut self.engine {
            Engine::Gpu(b, _) => Some(b),
            _ => None,
        }
    }

    pub fn card(&self) -> Card<'_> {
        with_model!(&self.engine, |b, m| {
            let c = &m.cfg;
            Card {
                arch: c.arch.as_str(),
                parameters: m.params,
                layers: c.num_layers,
                heads: c.num_heads,
                kv_heads: c.num_kv_heads,
                head_dim: c.head_dim(),
                d_model: c.d_model,
                d_ff: if c.arch == Arch::Llama { c.llama_hidden_dim() } else { c.d_ff },
                experts: c.moe.as_ref().map(|m| m.num_experts),
                top_k: c.moe.as_ref().map(|m| m.top_k),
                vocab_size: m.in_vocab(),
                src_vocab_size: c.src_vocab_size,
                tgt_vocab_size: c.tgt_vocab_size,
                context: c.max_seq_len,
                file_size: self.file_size,
                tokenizer: m.tokenizer.as_ref().map(TokenizerCard::from),
                backend: b.kind(),
                config: c,
                origin: &self.origin,
                eos: &self.eos,
            }
        })
    }

    /// The tokenizer that reads the user's text (for the encoder-decoder, the source side).
    pub fn source_tokenizer(&self) -> Option<&Tokenizer> {
        with_model!(&self.engine, |_b, m| m.tokenizer.as_ref())
    }

    /// The tokenizer that writes the model's output (the target table of a two-table tokenizer).
    pub fn output_tokenizer(&self) -> Option<&Tokenizer> {
        with_model!(&self.engine, |_b, m| m.output_tokenizer())
    }

    /// Text as tokens with the source tokenizer.
    pub fn tokenize(&self, text: &str) -> Result<Tokens> {
        let t = self.source_tokenizer().ok_or_else(|| TfError::Input("this model has no tokenizer: type token ids instead".into()))?;
        let enc = t.encode(text);
        let pieces = enc.ids.iter().map(|&i| t.token_str(i).unwrap_or_default()).collect();
        Ok(Tokens { kind: t.kind(), ids: enc.ids, pieces, spans: Some(enc.spans), unknown: Some(enc.unknown) })
    }

    /// A display string for each output id ("#id" where the tokenizer has none).
    pub fn pieces(&self, ids: &[u32]) -> Vec<String> {
        let t = self.output_tokenizer();
        ids.iter().map(|&i| t.and_then(|t| t.token_str(i).ok()).unwrap_or_else(|| format!("#{i}"))).collect()
    }

    /// Output ids as text; special ids (PAD / BOS / EOS of a chars table) are left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        with_model!(&self.engine, |_b, m| m.decode_output(ids))
    }

    /// PAD, BOS or EOS of the output tokenizer: such ids add no text.
    pub fn is_special(&self, id: u32) -> bool {
        self.output_tokenizer().and_then(|t| t.special_ids()).is_some_and(|(p, b, e)| id == p || id == b || id == e)
    }

    /// Token ids typed by hand ("1 5 9" or "1,5,9"), checked against the input vocabulary.
    pub fn parse_ids(&self, text: &str) -> Result<Vec<u32>> {
        let vocab = self.config().src_vocab_size as u64;
        let mut ids = Vec::new();
        for part in text.split(|c: char| c.is_whitespace() || c == ',').filter(|p| !p.is_empty()) {
            let id: u64 = part.parse().map_err(|_| {
                TfError::Input(format!("\"{part}\" is not a token id: this checkpoint has no tokenizer, so type ids like 1 5 9."))
            })?;
            if id >= vocab {
                return Err(TfError::Input(format!("Token id {id} is outside the vocabulary (0 to {}).", vocab.saturating_sub(1))));
            }
            ids.push(id as u32);
        }
        Ok(ids)
    }

    /// The prompt box as the model's input: tokenized with the checkpoint's tokenizer, or read as ids
    /// when it has none; with how it fits the context.
    pub fn prompt(&self, text: &str) -> Result<Prompt> {
        let tokens = if self.source_tokenizer().is_some() {
            self.tokenize(text)?
        } else {
            let ids = self.parse_ids(text)?;
            Tokens { kind: "ids", pieces: self.pieces(&ids), ids, spans: None, unknown: None }
        };
        let (n, ctx) = (tokens.ids.len(), self.config().max_seq_len);
        let (fits, room) = if self.is_encdec() { (n <= ctx, n <= ctx) } else { (true, n < ctx) };
        Ok(Prompt { tokens, context: ctx, fits, room, keep_last: ctx.saturating_sub(1) })
    }

    /// What one analysis pass reads after `src` (the prompt, or the source) and the generated `gen`:
    /// the encoder-decoder's decoder starts from BOS; a decoder past its context reads the newest
    /// tokens that fit.
    pub fn window(&self, src: &[u32], gen: &[u32]) -> Window {
        let ctx = self.config().max_seq_len;
        if self.is_encdec() {
            let tgt: Vec<u32> = std::iter::once(BOS_ID).chain(gen.iter().copied()).take(ctx).collect();
            return Window { ids: src.to_vec(), tgt: Some(tgt), offset: 0, start_len: 1 };
        }
        let all: Vec<u32> = src.iter().chain(gen).copied().collect();
        let offset = all.len().saturating_sub(ctx);
        Window { ids: all[offset..].to_vec(), tgt: None, offset, start_len: src.len() }
    }

    /// The `n` most likely next tokens after a row of logits, with the probabilities the sampler
    /// would use (temperature, top-k, top-p).
    pub fn candidates(&self, logits: &[f32], sampling: &Sampling, n: usize) -> Result<Vec<Candidate>> {
        let top = top_candidates(logits, &sampling.params()?, n);
        Ok(self.with_pieces(top))
    }

    fn with_pieces(&self, top: Vec<(u32, f32)>) -> Vec<Candidate> {
        let ids: Vec<u32> = top.iter().map(|c| c.0).collect();
        top.into_iter().zip(self.pieces(&ids)).map(|((id, p), piece)| Candidate { id, p, piece }).collect()
    }

    /// One pass with every attention map, mask and MoE routing table. `ids` is the input (the
    /// source of the encoder-decoder, whose decoder reads `tgt`, default [BOS]).
    pub async fn forward(&mut self, ids: &[u32], tgt: Option<&[u32]>) -> Result<ForwardOut> {
        self.running = None;
        with_model!(&mut self.engine, |b, m| m.forward(b, ids, tgt).await)
    }

    /// [`Session::forward`] keeping and reading back the attention maps of `maps` only (the layers
    /// the attention view shows).
    pub async fn forward_with(&mut self, ids: &[u32], tgt: Option<&[u32]>, maps: &crate::model::state::MapLayers) -> Result<ForwardOut> {
        self.running = None;
        with_model!(&mut self.engine, |b, m| m.forward_with(b, ids, tgt, maps).await)
    }

    /// Mean cross-entropy per predicted token over `ids`, and how many tokens were predicted.
    pub async fn eval_loss(&mut self, ids: &[u32]) -> Result<(f64, usize)> {
        self.running = None;
        with_model!(&mut self.engine, |b, m| m.eval_loss(b, ids).await)
    }

    /// Starts a generation: decoder / llama from the prompt `start`; the encoder-decoder encodes
    /// `src` and decodes from `start` (empty: BOS). Returns the ids the generation starts from (a
    /// too-long prompt is cut to its tail with a sliding window).
    pub fn start(&mut self, start: &[u32], src: Option<&[u32]>, cfg: GenConfig) -> Result<Vec<u32>> {
        self.running = None;
        let cfg = self.with_eos(cfg);
        let generation = with_model!(&mut self.engine, |b, m| m.start_generation(b, start, src, cfg))?;
        let ids = generation.ids.clone();
        let text = self.output_tokenizer().map(|t| t.stream_decoder());
        self.running = Some(Running { generation, text });
        Ok(ids)
    }

    /// The page's start: `ids` is the prompt, or the encoder-decoder's source (decoded from BOS).
    pub fn start_from(&mut self, ids: &[u32], cfg: GenConfig) -> Result<Vec<u32>> {
        if self.is_encdec() {
            self.start(&[BOS_ID], Some(ids), cfg)
        } else {
            self.start(ids, None, cfg)
        }
    }

    /// Generation steps per GPU submission from the next batch of the running generation on (the
    /// page grows K while a batch stays within its frame budget).
    pub fn set_tokens_per_submit(&mut self, k: usize) -> Result<()> {
        let k = check_tokens_per_submit(k)?;
        if let Some(r) = self.running.as_mut() {
            r.generation.cfg.tokens_per_submit = k;
        }
        Ok(())
    }

    /// `cfg` stopping at the model's EOS, unless it names its own stop ids.
    fn with_eos(&self, cfg: GenConfig) -> GenConfig {
        if cfg.stop_ids.is_empty() {
            GenConfig { stop_ids: self.eos.clone(), ..cfg }
        } else {
            cfg
        }
    }

    /// The ids that end a generation (the model's EOS).
    pub fn eos(&self) -> &[u32] {
        &self.eos
    }

    /// Where the model came from (format, declared architecture, files).
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// Stops the running generation.
    pub fn stop(&mut self) {
        self.running = None;
    }

    /// The running generation's ids so far (start included).
    pub fn generated(&self) -> Option<&[u32]> {
        self.running.as_ref().map(|r| &r.generation.ids[..])
    }

    /// The next token of the running generation, or how it ended; None without one.
    pub async fn next(&mut self) -> Result<Option<Next>> {
        let Some(run) = self.running.as_mut() else { return Ok(None) };
        let g = &mut run.generation;
        let out = with_model!(&mut self.engine, |b, m| m.next_token(b, g).await)?;
        let Some(out) = out else {
            let text = run.text.as_mut().map(|d| d.finish()).unwrap_or_default();
            return Ok(Some(Next::Finished(Finished { done: true, text, reason: g.stop_reason })));
        };
        let (step, done) = (g.step - 1, g.done);
        let special = self.is_special(out.id);
        let run = self.running.as_mut().expect("the generation is running");
        let tok = with_model!(&self.engine, |_b, m| m.output_tokenizer());
        let text = match (tok, run.text.as_mut()) {
            (Some(t), Some(d)) if !special => d.push(t, out.id).unwrap_or_default(),
            _ => String::new(),
        };
        let piece = self.pieces(&[out.id]).pop().unwrap_or_default();
        let top = self.with_pieces(out.top);
        Ok(Some(Next::Token(Step {
            id: out.id,
            step,
            window_start: out.window_start,
            text,
            piece,
            done,
            attention: out.attention,
            top,
            moe: out.moe,
            batch: out.batch,
        })))
    }

    /// A whole generation: the ids, start included.
    pub async fn generate(&mut self, start: &[u32], src: Option<&[u32]>, cfg: GenConfig) -> Result<Vec<u32>> {
        self.running = None;
        let cfg = self.with_eos(cfg);
        with_model!(&mut self.engine, |b, m| m.generate(b, start, src, cfg).await)
    }

    /// The look-inside report (model::inspect); the ablation stays off afterwards.
    pub async fn inspect(&mut self, ids: &[u32], tgt: Option<&[u32]>, ablation: Option<&Ablation>) -> Result<Report> {
        self.running = None;
        with_model!(&mut self.engine, |b, m| {
            let r = m.inspect(b, ids, tgt, ablation).await;
            m.clear_ablation(b);
            r
        })
    }

    /// The induction test: `n` random tokens repeated twice.
    pub async fn induction_test(&mut self, n: usize, seed: u64, src: Option<&[u32]>, ablation: Option<&Ablation>) -> Result<InductionTest> {
        self.running = None;
        with_model!(&mut self.engine, |b, m| {
            let r = m.induction_test(b, n, seed, src, ablation).await;
            m.clear_ablation(b);
            r
        })
    }

    /// The page's Inspect request as JSON (model::inspect::inspect_json).
    pub async fn inspect_page(&mut self, ids: &[u32], tgt: Option<&[u32]>, o: &PageOpts) -> Result<serde_json::Value> {
        self.running = None;
        with_model!(&mut self.engine, |b, m| m.inspect_json(b, ids, tgt, o).await)
    }

    /// Greedy generation with an ablation: {ids, text}.
    pub async fn generate_ablated(&mut self, ids: &[u32], o: &PageOpts) -> Result<serde_json::Value> {
        self.running = None;
        with_model!(&mut self.engine, |b, m| m.generate_ablated_json(b, ids, o).await)
    }
}

/// What a set of files holds, told apart by their names (the page's dropped files, a directory).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileLayout {
    /// one of our own `.safetensors` checkpoints (config and tokenizer in its metadata)
    Ours(String),
    /// a Hugging Face model directory: config.json, model.safetensors or shards + index, tokenizer.json
    HfDirectory,
    /// llama2.c's model.bin (named here), with tokenizer.bin beside it when present
    Llama2c(String),
}

/// Largest tokenizer file read (tokenizer.json, tokenizer.bin).
pub const MAX_TOKENIZER_BYTES: u64 = 256 << 20;
/// Largest small JSON file read (generation_config.json, tokenizer_config.json).
const MAX_SMALL_JSON: u64 = 16 << 20;

/// Tells which kind of model a set of files is, from the names alone, or says in one line what is missing.
pub fn detect_files(names: &[String]) -> Result<FileLayout> {
    let has = |n: &str| names.iter().any(|x| x == n);
    let ext = |e: &str| names.iter().filter(|n| n.to_ascii_lowercase().ends_with(e)).cloned().collect::<Vec<_>>();
    if let Some(dup) = names.iter().enumerate().find(|(i, n)| names[..*i].contains(n)).map(|(_, n)| n) {
        return Err(TfError::Input(format!("two files are named {}: give each file once", crate::error::quote(dup))));
    }
    if has("config.json") {
        return Ok(FileLayout::HfDirectory);
    }
    let bins: Vec<String> = ext(".bin").into_iter().filter(|n| n != "tokenizer.bin").collect();
    let tensors = ext(".safetensors");
    match (bins.as_slice(), tensors.as_slice()) {
        ([bin], []) => Ok(FileLayout::Llama2c(bin.clone())),
        ([], [one]) if !has("model.safetensors.index.json") && !has("tokenizer.json") => Ok(FileLayout::Ours(one.clone())),
        ([], [_, ..]) => Err(TfError::Input(format!(
            "config.json is missing: a Hugging Face model needs its config.json together with {}",
            tensors.join(", ")
        ))),
        ([_, _, ..], _) => Err(TfError::Input(format!(
            "several llama2.c .bin files ({}): give one model.bin (and tokenizer.bin)",
            bins.join(", ")
        ))),
        ([_, ..], [_, ..]) => Err(TfError::Input(
            "both .bin and .safetensors files: give one model (config.json + model.safetensors, or model.bin + tokenizer.bin)".into(),
        )),
        ([], []) if has("tokenizer.bin") => {
            Err(TfError::Input("tokenizer.bin alone: give the llama2.c model .bin together with it".into()))
        }
        ([], []) => Err(TfError::Input(
            "no model among the files: give config.json + model.safetensors (or its shards and model.safetensors.index.json) + tokenizer.json, \
             a llama2.c model.bin + tokenizer.bin, or a tinyformer .safetensors checkpoint"
                .into(),
        )),
    }
}

/// A tokenizer file given with a model (the page's files, the CLI's --tokenizer or the file beside the model).
pub struct TokenizerFile<'a> {
    pub name: &'a str,
    pub bytes: &'a [u8],
}

fn read_json(files: &dyn Files, name: &str) -> Result<Option<serde_json::Value>> {
    if files.size(name).is_none() {
        return Ok(None);
    }
    let bytes = files.read_capped(name, MAX_SMALL_JSON).map_err(|e| TfError::Checkpoint(e.to_string()))?;
    serde_json::from_slice(&bytes).map(Some).map_err(|e| TfError::Checkpoint(format!("{name}: not valid JSON ({e})")))
}

/// The ids that end a foreign model's generation: `eos_token_id` (a number or a list) of
/// generation_config.json, else of config.json, else tokenizer_config.json's `eos_token` looked up in the
/// tokenizer. llama2.c's run.c stops at BOS (1), which delimits its training sequences.
fn foreign_eos(files: &dyn Files, layout: &FileLayout, tok: Option<&Tokenizer>, vocab: usize) -> Result<Vec<u32>> {
    if let FileLayout::Llama2c(_) = layout {
        return Ok(vec![1]);
    }
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        match v {
            serde_json::Value::Number(n) => n.as_u64().into_iter().map(|x| x as u32).collect(),
            serde_json::Value::Array(a) => a.iter().filter_map(|x| x.as_u64()).map(|x| x as u32).collect(),
            _ => vec![],
        }
    };
    let mut eos = vec![];
    for name in ["generation_config.json", "config.json"] {
        if let Some(v) = read_json(files, name)?.and_then(|j| j.get("eos_token_id").cloned()) {
            eos = ids(&v);
            if !eos.is_empty() {
                break;
            }
        }
    }
    if eos.is_empty() {
        if let (Some(cfg), Some(Tokenizer::HfBpe(t))) = (read_json(files, "tokenizer_config.json")?, tok) {
            let name = match cfg.get("eos_token") {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(o) => o.get("content").and_then(|c| c.as_str()).map(str::to_string),
                None => None,
            };
            eos.extend(name.and_then(|n| t.token_to_id(&n)));
        }
    }
    if let Some(bad) = eos.iter().find(|&&id| id as usize >= vocab) {
        return Err(TfError::Checkpoint(format!("the EOS id {bad} is outside the model's vocabulary of {vocab}")));
    }
    Ok(eos)
}

/// A foreign model's files, planned and checked without reading the weights: what `info` prints and what
/// [`Session::load_files`] loads.
pub struct ForeignFiles {
    pub layout: FileLayout,
    pub plan: crate::formats::Plan,
    /// the tokenizer and the file it came from
    pub tokenizer: Option<(String, Tokenizer)>,
    pub eos: Vec<u32>,
}

/// The files of `inner` named in `names`, and no others: a llama2.c .bin given beside a directory's
/// config.json is read as llama2.c, and only the files a user gave are ever read.
struct Only<'a> {
    inner: &'a dyn Files,
    names: &'a [String],
}

impl Files for Only<'_> {
    fn size(&self, name: &str) -> Option<u64> {
        self.names.iter().any(|n| n == name).then(|| self.inner.size(name)).flatten()
    }
    fn read_range(&self, name: &str, start: u64, len: u64) -> crate::formats::Result<Vec<u8>> {
        self.inner.read_range(name, start, len)
    }
}

/// Plans a Hugging Face directory or a llama2.c model.bin ([`crate::formats::plan`]), reads its tokenizer
/// (`tokenizer` if given, else tokenizer.json / tokenizer.bin among the files) and checks the tokenizer's
/// vocabulary against the model's, and finds its EOS.
pub fn plan_files(files: &dyn Files, names: &[String], tokenizer: Option<TokenizerFile<'_>>) -> Result<ForeignFiles> {
    let layout = detect_files(names)?;
    let files = &Only { inner: files, names };
    let bin = match &layout {
        FileLayout::Ours(name) => return Err(TfError::Input(format!("{name} is a tinyformer checkpoint, not a foreign model"))),
        FileLayout::HfDirectory => None,
        FileLayout::Llama2c(bin) => Some(bin.as_str()),
    };
    let plan = crate::formats::plan(files, bin).map_err(|e| TfError::Checkpoint(e.to_string()))?;
    let beside = if bin.is_some() { "tokenizer.bin" } else { "tokenizer.json" };
    let owned;
    let file = match tokenizer {
        Some(t) => Some(t),
        None if names.iter().any(|n| n == beside) && files.size(beside).is_some() => {
            owned = files.read_capped(beside, MAX_TOKENIZER_BYTES).map_err(|e| TfError::Input(e.to_string()))?;
            Some(TokenizerFile { name: beside, bytes: &owned })
        }
        None => None,
    };
    let vocab = plan.dims.vocab_size;
    let tokenizer = match file {
        None => None,
        Some(f) => {
            let t = Tokenizer::from_file_bytes(f.bytes).map_err(|e| TfError::Input(format!("{}: {e}", f.name)))?;
            if t.vocab_size() > vocab {
                return Err(TfError::Input(format!(
                    "the tokenizer {} has {} tokens but the model's vocabulary is {vocab}: they do not belong together",
                    f.name,
                    t.vocab_size()
                )));
            }
            Some((f.name.to_string(), t))
        }
    };
    let eos = foreign_eos(files, &layout, tokenizer.as_ref().map(|t| &t.1), vocab)?;
    Ok(ForeignFiles { layout, plan, tokenizer, eos })
}

impl Session {
    /// Loads a model from a set of files (the page's dropped or picked files, a directory, a file and what
    /// is beside it): one of our own `.safetensors` checkpoints, a Hugging Face directory or llama2.c's
    /// model.bin ([`detect_files`]). `names` lists the files present; `tokenizer` overrides the one among the
    /// files (tokenizer.json, tokenizer.bin). The tokenizer's vocabulary and the memory budget are checked
    /// against the model's config before any weight is read.
    pub async fn load_files(
        device: &Device,
        files: &dyn Files,
        names: &[String],
        tokenizer: Option<TokenizerFile<'_>>,
        budget: &Budget,
    ) -> Result<Session> {
        if let FileLayout::Ours(name) = detect_files(names)? {
            if let Some(t) = tokenizer {
                return Err(TfError::Input(format!(
                    "{name} is a tinyformer checkpoint with its own tokenizer: {} is not used with it",
                    crate::error::quote(t.name)
                )));
            }
            let size = files.size(&name).unwrap_or(0);
            if size > budget.bytes {
                return Err(TfError::Memory(format!(
                    "{name} is {} but the memory budget is {} ({})",
                    crate::model::memory::human_bytes(size),
                    crate::model::memory::human_bytes(budget.bytes),
                    budget.how_to_raise
                )));
            }
            let bytes = files.read_capped(&name, budget.bytes).map_err(|e| TfError::Input(e.to_string()))?;
            let mut s = Session::load(device, &bytes, budget).await?;
            s.origin.files = vec![name];
            return Ok(s);
        }
        let foreign = plan_files(files, names, tokenizer)?;
        let files = &Only { inner: files, names };
        let bin = match &foreign.layout {
            FileLayout::Llama2c(b) => Some(b.as_str()),
            _ => None,
        };
        // The budget is checked on our config of the model before any tensor is read (formats::open).
        let open = |copies: WeightCopies, keeps16: bool| {
            let over = std::cell::Cell::new(false);
            crate::formats::open16(files, bin, |cfg, w16| {
                let r = memory::demand_of(cfg, copies, &crate::model::state::Plan::at_load(cfg), w16 && keeps16).check(budget);
                over.set(r.is_err());
                r
            })
            .map(|o| o.checkpoint)
            .map_err(|e| if over.get() { TfError::Memory(e.0) } else { TfError::Checkpoint(e.0) })
        };
        let mut engine = match device {
            Device::Gpu(g) => {
                if g.is_lost() {
                    return Err(TfError::Gpu("the GPU device was lost; reload the page to get a new one".into()));
                }
                let mut b = GpuBackend::new(g.clone());
                let mut ck = open(b.weight_copies(), b.keeps_16bit());
                if b.widen16 && matches!(ck, Err(TfError::Memory(_))) {
                    // as in Session::load: widened weights over the budget or a limit stay 16-bit instead
                    b.widen16 = false;
                    ck = open(b.weight_copies(), b.keeps_16bit());
                }
                let ck = ck?;
                let m = g.scoped(|| Model::from_checkpoint(&b, ck, budget)).await?;
                Engine::Gpu(b, m)
            }
            Device::Cpu => {
                let ck = open(FastCpuBackend::default().weight_copies(), false)?;
                Engine::Cpu(FastCpuBackend::default(), Model::from_checkpoint(&FastCpuBackend::default(), ck, budget)?)
            }
            Device::Reference => {
                let ck = open(CpuBackend.weight_copies(), false)?;
                Engine::Reference(CpuBackend, Model::from_checkpoint(&CpuBackend, ck, budget)?)
            }
        };
        let ForeignFiles { layout, plan, tokenizer, eos } = foreign;
        let tokenizer_file = tokenizer.as_ref().map(|t| t.0.clone());
        if let Some((_, t)) = tokenizer {
            with_model!(&mut engine, |_b, m| m.set_tokenizer(t));
        }
        let origin = Origin {
            format: if matches!(layout, FileLayout::Llama2c(_)) { "llama2c" } else { "huggingface" },
            declared: Some(plan.declared.clone()),
            family: Some(plan.family.as_str()),
            files: names.iter().filter(|n| Some(n.as_str()) != tokenizer_file.as_deref()).cloned().collect(),
            tokenizer_file,
        };
        let file_size = names.iter().filter_map(|n| files.size(n)).sum::<u64>() as usize;
        Ok(Session { engine, file_size, running: None, origin, eos })
    }
}

/// The encoder-decoder's cross-attention mask for the Masks view: a target of `tgt_len` tokens over
/// a source of `src_len` tokens whose last `src_pad` are PAD, (tgt_len, src_len), 1 = may attend.
pub fn cross_mask(tgt_len: usize, src_len: usize, src_pad: usize) -> Result<Mask> {
    let (t, s, p) = (tgt_len, src_len, src_pad);
    if t == 0 || s == 0 || t > mask::MAX_VIEW_LEN || s > mask::MAX_VIEW_LEN {
        return Err(TfError::Input(format!("lengths must be between 1 and {}, got target {t}, source {s}", mask::MAX_VIEW_LEN)));
    }
    if p > s {
        return Err(TfError::Input(format!("{p} PAD tokens do not fit in a source of {s}")));
    }
    let src: Vec<u32> = (0..s).map(|i| if i < s - p { 1 + i as u32 } else { mask::PAD_ID }).collect();
    Ok(mask::padding(t, &src))
}

/// The BPE workbench's bounds: training text (UTF-8 bytes), sentence (characters), vocabulary size.
/// The answer holds (merges + 1) x pieces strings, so the sentence bound keeps it under ~1M strings;
/// training is O(N log N) in the text (tokenizer/train.rs). www/worker.js checks the same numbers.
pub const BPE_MAX_TEXT_BYTES: usize = 1 << 20;
pub const BPE_MAX_SENTENCE_CHARS: usize = 200;
pub const BPE_MAX_VOCAB: u32 = 5000;

/// The page's BPE workbench: the seed's BPE trained on a text, and a sentence after each merge.
#[derive(Debug, Serialize)]
pub struct BpeWorkbench {
    pub merges: Vec<(String, String)>,
    /// steps[n] = the sentence's pieces after the first n merges
    pub steps: Vec<Vec<String>>,
    pub vocab_size: usize,
    pub report: crate::tokenizer::SeedBpeReport,
    /// why vocab_size is not the size asked ("" if it is)
    pub explanation: String,
}

/// Trains the seed's BPE (lowercase words with </w>) on `text` to `vocab_size`, then tokenizes
/// `sentence` after each number of merges, within the bounds above.
pub fn bpe_workbench(text: &str, vocab_size: u32, sentence: &str) -> Result<BpeWorkbench> {
    if text.trim().is_empty() {
        return Err(TfError::Input("paste some text to train on".into()));
    }
    if !(1..=BPE_MAX_VOCAB).contains(&vocab_size) {
        return Err(TfError::Input(format!("vocabulary size must be between 1 and {BPE_MAX_VOCAB}, got {vocab_size}")));
    }
    if text.len() > BPE_MAX_TEXT_BYTES {
        return Err(TfError::Input(format!("the training text is limited to {} MB in the page", BPE_MAX_TEXT_BYTES >> 20)));
    }
    if sentence.chars().count() > BPE_MAX_SENTENCE_CHARS {
        return Err(TfError::Input(format!("the sentence is limited to {BPE_MAX_SENTENCE_CHARS} characters")));
    }
    let (bpe, report) = crate::tokenizer::train_seed_bpe_with_report(text, vocab_size as usize);
    let merges: Vec<(String, String)> = bpe.merges().to_vec();
    let tok = Tokenizer::from(bpe);
    let steps = (0..=merges.len())
        .map(|n| tok.encode_with_first_n_merges(sentence, n).ids.iter().map(|&i| tok.token_str(i).unwrap_or_default()).collect())
        .collect();
    Ok(BpeWorkbench { merges, steps, vocab_size: tok.vocab_size(), explanation: report.explain(), report })
}

#[cfg(test)]
mod tests {
    use super::{detect_files, FileLayout};

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_set_of_files_is_told_apart_by_its_names() {
        let hf = names(&["config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "tokenizer.json"]);
        assert_eq!(detect_files(&hf).unwrap(), FileLayout::HfDirectory);
        // a folder with the PyTorch weights beside: still the directory (only config.json's files are read)
        assert_eq!(detect_files(&names(&["config.json", "pytorch_model.bin", "model.safetensors"])).unwrap(), FileLayout::HfDirectory);
        assert_eq!(detect_files(&names(&["stories15M.bin", "tokenizer.bin"])).unwrap(), FileLayout::Llama2c("stories15M.bin".into()));
        assert_eq!(detect_files(&names(&["model.bin"])).unwrap(), FileLayout::Llama2c("model.bin".into()));
        assert_eq!(detect_files(&names(&["mine.safetensors"])).unwrap(), FileLayout::Ours("mine.safetensors".into()));
        let refused: [(&[&str], &str); 7] = [
            (&["model.safetensors", "tokenizer.json"], "config.json is missing"),
            (&["model.safetensors.index.json", "model-00001-of-00002.safetensors"], "config.json is missing"),
            (&["a.safetensors", "b.safetensors"], "config.json is missing"),
            (&["a.bin", "b.bin", "tokenizer.bin"], "several llama2.c .bin files (a.bin, b.bin)"),
            (&["model.bin", "mine.safetensors"], "both .bin and .safetensors"),
            (&["tokenizer.bin"], "tokenizer.bin alone"),
            (&["notes.txt"], "no model among the files"),
        ];
        for (set, needle) in refused {
            let e = detect_files(&names(set)).unwrap_err().to_string();
            assert!(e.contains(needle) && !e.contains('\n'), "{set:?}: {e}");
        }
        let e = detect_files(&names(&["config.json", "model.safetensors", "config.json"])).unwrap_err().to_string();
        assert!(e.contains("two files are named \"config.json\""), "{e}");
    }
}
