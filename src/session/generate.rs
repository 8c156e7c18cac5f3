//! Generation: the sampler's settings and the page's generation options (checked once here for the
//! page and the command line), and a generation run whole or step by step, with the text its tokens
//! complete as they come.

use serde::{Deserialize, Serialize};

use super::{Candidate, Running, Session};
use crate::error::{Result, TfError};
use crate::model::run::{GenConfig, StopReason, BOS_ID};
use crate::ops::SampleParams;

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
    /// Starts a generation: decoder / llama from the prompt `start`; the encoder-decoder encodes
    /// `src` and decodes from `start` (empty: BOS). Returns the ids the generation starts from (a
    /// too-long prompt is cut to its tail with a sliding window).
    pub fn start(&mut self, start: &[u32], src: Option<&[u32]>, cfg: GenConfig) -> Result<Vec<u32>> {
        self.running = None;
        let cfg = self.for_model(cfg);
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

    /// `cfg` stopping at the model's EOS, unless it names its own stop ids, and held to the output
    /// constraint the checkpoint declares, unless it names its own.
    fn for_model(&self, cfg: GenConfig) -> GenConfig {
        let stop_ids = if cfg.stop_ids.is_empty() { self.eos.clone() } else { cfg.stop_ids };
        let constraint = cfg.constraint.or_else(|| self.text.constraint.clone());
        GenConfig { stop_ids, constraint, ..cfg }
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
        let tok = self.text.output_tokenizer();
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
        let cfg = self.for_model(cfg);
        with_model!(&mut self.engine, |b, m| m.generate(b, start, src, cfg).await)
    }
}
