//! The trainable tensors: every tensor `Weights::declare` names for an architecture, held on a
//! backend with its gradient and both Adam moments; their initialisation (seeded, GPT-2's or a
//! wider one); and the checkpoint a run writes (our safetensors format, the declared names, the
//! config and tokenizer in the metadata, so every command and the page open it).

use std::collections::HashMap;

use crate::error::{Result, TfError};
use crate::model::checkpoint::Checkpoint;
use crate::model::config::ModelConfig;
use crate::model::forward::ffn::Ffn;
use crate::model::forward::weights::{Declared, Role, Sink, VarBuilder, Weights};
use crate::rng::Rng;
use crate::train::ops::Train;

/// How parameters start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Init {
    /// GPT-2 / nanoGPT: matmul weights and the token embedding N(0, 0.02), the learned position
    /// table N(0, 0.01) (OpenAI's GPT-2 `wpe`), the residual projections (the attention's output and
    /// the FFN's second matrix) N(0, 0.02 / sqrt(2 L)), biases 0, norm gains 1. The smaller position
    /// table matters for the induction preset: at 0.02 the 2-layer attention-only model more often
    /// learns to copy by position (PyTorch on the same data: an induction head in 3 of 4 seeds at
    /// 0.01 or 0.002, 1 of 4 at 0.02).
    Gpt2,
    /// wider: matmul weights N(0, 1 / fan_in), embeddings N(0, 1), biases 0, norm gains 1
    Wide,
}

impl Init {
    pub fn parse(s: &str) -> Result<Init> {
        match s {
            "gpt2" => Ok(Init::Gpt2),
            "wide" => Ok(Init::Wide),
            _ => Err(TfError::Input(format!("--init must be gpt2 or wide, got {}", crate::error::quote(s)))),
        }
    }
}

/// A sink that numbers the declared tensors: `Weights<usize>` is the architecture's structure,
/// each field the index of its tensor in `Params`' lists.
#[derive(Default)]
struct Slots(Vec<Declared>);

impl Sink for Slots {
    type T = usize;
    fn take(&mut self, name: &str, shape: &[usize], role: Role) -> Result<usize> {
        self.0.push(Declared { name: name.to_string(), shape: shape.to_vec(), role });
        Ok(self.0.len() - 1)
    }
}

/// The parameters of a model being trained, in declaration order.
pub struct Params<T> {
    pub decl: Vec<Declared>,
    /// the architecture's structure, as indices into the lists below
    pub layout: Weights<usize>,
    pub p: Vec<T>,
    /// gradients (summed over the step's micro-batches)
    pub g: Vec<T>,
    /// Adam's first and second moments
    pub m: Vec<T>,
    pub v: Vec<T>,
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl<T> Params<T> {
    /// The declared tensors of `cfg` and the structure that indexes them.
    pub fn declare(cfg: &ModelConfig) -> Result<(Vec<Declared>, Weights<usize>)> {
        let mut s = Slots::default();
        let layout = Weights::declare(cfg, &mut VarBuilder::new(&mut s))?;
        Ok((s.0, layout))
    }

    /// Builds the parameters from their initial values (one Vec per declared tensor).
    pub fn from_values<B: Train<T = T>>(be: &B, cfg: &ModelConfig, values: Vec<Vec<f32>>) -> Result<Params<T>> {
        let (decl, layout) = Self::declare(cfg)?;
        let mut ps = Params { p: vec![], g: vec![], m: vec![], v: vec![], decl, layout };
        for (d, val) in ps.decl.iter().zip(values) {
            if val.len() != numel(&d.shape) {
                return Err(TfError::Internal(format!("{} has {} initial values for shape {:?}", d.name, val.len(), d.shape)));
            }
            ps.p.push(be.tensor(&d.shape, &val, &d.name)?);
            ps.g.push(be.zeros(&d.shape, &format!("grad {}", d.name))?);
            ps.m.push(be.zeros(&d.shape, &format!("adam m {}", d.name))?);
            ps.v.push(be.zeros(&d.shape, &format!("adam v {}", d.name))?);
        }
        Ok(ps)
    }

    /// Seeded initial values for `cfg` (see [`Init`]).
    pub fn init_values(cfg: &ModelConfig, init: Init, seed: u64) -> Result<Vec<Vec<f32>>> {
        let (decl, layout) = Self::declare(cfg)?;
        let residual = residual_projections(&layout);
        let mut rng = Rng::new(seed);
        let resid_scale = 1.0 / (2.0 * cfg.num_layers.max(1) as f32).sqrt();
        Ok(decl
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let n = numel(&d.shape);
                let std = match (d.role, init) {
                    (Role::Bias, _) => return vec![0.0; n],
                    (Role::Norm, _) => return vec![if d.name.ends_with(".bias") { 0.0 } else { 1.0 }; n],
                    (_, Init::Gpt2) if residual.contains(&i) => 0.02 * resid_scale,
                    (_, Init::Gpt2) if d.name == "position_embedding.weight" => 0.01,
                    (_, Init::Gpt2) => 0.02,
                    (Role::Embedding | Role::TiedEmbedding, Init::Wide) => 1.0,
                    (_, Init::Wide) => 1.0 / (*d.shape.last().unwrap_or(&1) as f32).sqrt(),
                };
                (0..n).map(|_| rng.gaussian() * std).collect()
            })
            .collect())
    }

    /// The values of a checkpoint (ours, every tensor f32 after widening), in declaration order.
    pub fn checkpoint_values(ck: &mut Checkpoint) -> Result<Vec<Vec<f32>>> {
        let (decl, _) = Self::declare(&ck.config)?;
        decl.iter()
            .map(|d| {
                let t = ck.take(&d.name).ok_or_else(|| TfError::Checkpoint(format!("tensor '{}' is missing", d.name)))?;
                if t.is_16bit() {
                    return Ok(crate::model::checkpoint::widen16(&t.bits, t.dtype));
                }
                Ok(t.data)
            })
            .collect()
    }

    /// Whether tensor i is decayed by AdamW: tensors of 2 or more dimensions (matmul weights and
    /// embeddings), not norm gains or biases (nanoGPT's configure_optimizers).
    pub fn decays(&self, i: usize) -> bool {
        self.decl[i].shape.len() >= 2
    }

    pub fn numel(&self, i: usize) -> usize {
        numel(&self.decl[i].shape)
    }

    /// Every parameter (or, with `grads`, every gradient) read back, in declaration order.
    pub async fn read<B: Train<T = T>>(&self, be: &mut B, grads: bool) -> Result<Vec<Vec<f32>>> {
        let list = if grads { &self.g } else { &self.p };
        let mut out = Vec::with_capacity(list.len());
        for (i, t) in list.iter().enumerate() {
            out.push(be.read_f32(t, 0, self.numel(i)).await?);
        }
        Ok(out)
    }
}

/// The indices of the residual projections: each attention's output matrix and each FFN's last.
fn residual_projections(w: &Weights<usize>) -> Vec<usize> {
    let mut out = vec![];
    for l in w.layers.iter().chain(&w.enc_layers) {
        out.push(l.attn.o.w);
        if let Some((cross, _)) = &l.cross {
            out.push(cross.o.w);
        }
        match l.ffn.as_ref().map(|f| &f.net) {
            Some(Ffn::Dense { l2, .. }) => out.push(l2.w),
            Some(Ffn::SwiGlu { w2, .. }) => out.push(w2.w),
            Some(Ffn::Moe { experts, .. }) => out.extend(experts.iter().map(|(_, l2)| l2.w)),
            None => {}
        }
    }
    out
}

/// A checkpoint in our format: the declared tensors under their names, the config JSON and the
/// tokenizer (if any) in the metadata, so every command and the page open it (`tinyformer train
/// --out` and the page's training lab write this).
pub fn checkpoint_bytes(
    decl: &[Declared],
    values: Vec<Vec<f32>>,
    config_json: &str,
    tokenizer: Option<&crate::tokenizer::Tokenizer>,
) -> Result<Vec<u8>> {
    let tensors: Vec<_> = decl.iter().zip(values).map(|(d, v)| (d.name.clone(), d.shape.clone(), v)).collect();
    let mut meta = HashMap::from([("config".to_string(), config_json.to_string())]);
    if let Some(t) = tokenizer {
        meta.insert("tokenizer".into(), t.to_json());
    }
    safetensors_bytes(&tensors, meta)
}

/// An f32 tensor of a safetensors file written by [`safetensors_bytes`] (an optimizer state, a lab
/// snapshot): its values, or why not ("NAME is missing", "NAME is not f32").
pub fn f32_tensor(st: &safetensors::SafeTensors, name: &str) -> std::result::Result<Vec<f32>, String> {
    let t = st.tensor(name).map_err(|_| format!("{name} is missing"))?;
    if t.dtype() != safetensors::Dtype::F32 {
        return Err(format!("{name} is not f32"));
    }
    Ok(t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

/// A safetensors file of f32 tensors (name, shape, values) with `metadata`.
pub fn safetensors_bytes(tensors: &[(String, Vec<usize>, Vec<f32>)], metadata: HashMap<String, String>) -> Result<Vec<u8>> {
    use safetensors::tensor::TensorView;
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                .map(|v| (name.clone(), v))
                .map_err(|e| TfError::Internal(format!("{name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, Some(metadata)).map_err(|e| TfError::Internal(format!("writing safetensors: {e}")))
}
