//! The session core for the page (src/wasm/) and the command line (src/cli): a model loaded on any
//! backend (the GPU, the fast CPU path, the CPU reference), one generation at most in progress. This
//! file owns the session itself, where it runs ([`Device`]) and its loading, from a checkpoint's bytes
//! or from a set of files; the submodules add what the session does: [`card`] (the model card),
//! [`prompt`] (tokens, the prompt and its window, next-token candidates), [`generate`] (sampling
//! settings and generation step by step), [`inspect`] (passes with maps, evaluation and the look-inside
//! tools), [`files`] (telling foreign files apart, planning them, their EOS) and [`text`] (the model's
//! tokenizers and output constraint, kept beside the network). Everything it returns
//! is a plain Rust value or a serde struct; src/wasm/ and the CLI only (de)serialize. Native and wasm.

use std::sync::Arc;

use serde::Serialize;

use crate::error::{Result, TfError};
use crate::fastcpu::FastCpuBackend;
use crate::formats::Files;
use crate::gpu::{Gpu, KernelPolicy};
use crate::model::config::{Arch, ModelConfig};
use crate::model::memory::{self, Budget, WeightCopies};
use crate::model::run::Generation;
use crate::model::{Backend, CpuBackend, GpuBackend, Model};
use crate::tokenizer::StreamDecoder;

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
            $crate::session::Engine::Gpu($b, $m) => $body,
            $crate::session::Engine::Cpu($b, $m) => $body,
            $crate::session::Engine::Reference($b, $m) => $body,
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
    /// the model's tokenizers and output constraint (the network is in `engine`)
    text: ModelText,
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

// The submodules come after `with_model!`, which they use.
pub mod card;
pub mod files;
pub mod generate;
pub mod inspect;
pub mod prompt;
pub mod text;

pub use card::{Card, TokenizerCard};
pub use files::{detect_files, open_foreign, plan_files, FileLayout, ForeignFiles, TokenizerFile, MAX_TOKENIZER_BYTES};
pub use generate::{check_tokens_per_submit, Finished, GenOptions, Next, Sampling, Step, MAX_TOKENS_PER_SUBMIT};
pub use inspect::{AblateMode, PageOpts};
pub use prompt::{Candidate, Prompt, Tokens, Window};
pub use text::ModelText;

use files::Only;

impl Session {
    /// Parses, validates and uploads a checkpoint within `budget`. On the GPU, allocation failures
    /// (out of memory, limits) come back as errors, so a caller's previous session stays usable.
    pub async fn load(device: &Device, bytes: &[u8], budget: &Budget) -> Result<Session> {
        let (engine, text) = match device {
            Device::Gpu(g) => {
                if g.is_lost() {
                    return Err(TfError::Gpu("the GPU device was lost; reload the page to get a new one".into()));
                }
                let mut b = GpuBackend::new(g.clone());
                let budget = &budget.with_limits(g.buffer_limits()); // one buffer over the binding limit is refused by name
                let mut m = g.scoped(|| text::load_within(&b, bytes, budget)).await;
                if b.widen16 && matches!(m, Err(TfError::Memory(_))) {
                    // a CPU-type adapter widens 16-bit weights for speed; where the widened model is over
                    // the budget or a limit, the 16-bit one may still fit: keep them 16-bit instead
                    b.widen16 = false;
                    m = g.scoped(|| text::load_within(&b, bytes, budget)).await;
                }
                let (m, text) = m?;
                (Engine::Gpu(b, m), text)
            }
            Device::Cpu => {
                let (m, text) = text::load_within(&FastCpuBackend::default(), bytes, budget)?;
                (Engine::Cpu(FastCpuBackend::default(), m), text)
            }
            Device::Reference => {
                let (m, text) = text::load_within(&CpuBackend, bytes, budget)?;
                (Engine::Reference(CpuBackend, m), text)
            }
        };
        let origin = Origin { format: "tinyformer", ..Origin::default() };
        Ok(Session { engine, text, file_size: bytes.len(), running: None, origin, eos: vec![] })
    }

    pub fn config(&self) -> &ModelConfig {
        with_model!(&self.engine, |_b, m| &m.cfg)
    }

    fn is_encdec(&self) -> bool {
        self.config().arch == Arch::EncoderDecoder
    }

    /// The backend's own name (`Backend::kind`): "gpu", or "cpu" for the fast CPU path and the reference alike
    pub fn backend(&self) -> &'static str {
        with_model!(&self.engine, |b, _m| b.kind())
    }

    pub fn parameters(&self) -> u64 {
        with_model!(&self.engine, |_b, m| m.params)
    }

    /// The kernels of the model on the GPU (`gpu::KernelPolicy`: the device's policy unless a
    /// benchmark set others); None on the CPU backends.
    pub fn gpu_policy(&mut self) -> Option<KernelPolicy> {
        self.gpu_backend().map(|b| b.policy())
    }

    /// Benchmarks: run other kernels on the model on the GPU from the next pass on (its `widen16`
    /// applies to later loads: `Gpu::set_widen16`).
    pub fn set_gpu_policy(&mut self, p: &KernelPolicy) -> Result<()> {
        let b = self.gpu_backend().ok_or_else(|| TfError::Input("no model is loaded on the GPU".into()))?;
        b.set_policy(p);
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

    /// The ids that end a generation (the model's EOS).
    pub fn eos(&self) -> &[u32] {
        &self.eos
    }

    /// Where the model came from (format, declared architecture, files).
    pub fn origin(&self) -> &Origin {
        &self.origin
    }
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
        let engine = match device {
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
                // read a tensor at a time as the model takes it (formats::open16_lazy): the file's tensors
                // are never all in memory beside the packed weights
                let b = FastCpuBackend::default();
                let (copies, keeps16) = (b.weight_copies(), b.keeps_16bit());
                let over = std::cell::Cell::new(false);
                let lazy = crate::formats::open16_lazy(files, bin, |cfg, w16| {
                    let r = memory::demand_of(cfg, copies, &crate::model::state::Plan::at_load(cfg), w16 && keeps16).check(budget);
                    over.set(r.is_err());
                    r
                })
                .map_err(|e| if over.get() { TfError::Memory(e.0) } else { TfError::Checkpoint(e.0) })?;
                let cfg = lazy.opened.checkpoint.config.clone();
                let m = Model::from_source(&b, cfg, &mut lazy.source(), lazy.weights16, budget)?;
                Engine::Cpu(b, m)
            }
            Device::Reference => {
                let ck = open(CpuBackend.weight_copies(), false)?;
                Engine::Reference(CpuBackend, Model::from_checkpoint(&CpuBackend, ck, budget)?)
            }
        };
        let ForeignFiles { layout, plan, tokenizer, eos } = foreign;
        let tokenizer_file = tokenizer.as_ref().map(|t| t.0.clone());
        // a foreign checkpoint carries no tokenizer and no output constraint (formats::open): its text
        // is the tokenizer file read beside it
        let text = ModelText::from_tokenizer(tokenizer.map(|(_, t)| t));
        let origin = Origin {
            format: if matches!(layout, FileLayout::Llama2c(_)) { "llama2c" } else { "huggingface" },
            declared: Some(plan.declared.clone()),
            family: Some(plan.family.as_str()),
            files: names.iter().filter(|n| Some(n.as_str()) != tokenizer_file.as_deref()).cloned().collect(),
            tokenizer_file,
        };
        let file_size = names.iter().filter_map(|n| files.size(n)).sum::<u64>() as usize;
        Ok(Session { engine, text, file_size, running: None, origin, eos })
    }
}
