//! The hooks the forward calls at each block of the decoder (`Hooks`, `HookPoint`): the captures
//! of an inspection pass (every head's output, the residual stream and its logit lens) and the
//! ablations that stay on for every pass until cleared (heads zeroed or set to their mean, experts
//! removed from routing, mask cells blocked). The encoder's layers have no hooks.

use crate::error::{Result, TfError};
use crate::model::analysis::inspect::{Ablation, AblationKind};
use crate::model::backend::Backend;
use crate::model::config::Arch;
use crate::model::forward::Model;
use crate::model::map_kind::Stack;
use crate::ops::EwOp;

/// Ablation buffers of one decoder layer: att = att * keep + add, before W_o. Each (max_seq, NH*HS).
pub struct LayerAblation<T> {
    pub keep: T,
    pub add: T,
}

/// What the inspection pass captures (rows = the pass's T tokens, from position 0).
pub struct Capture<T> {
    pub t: usize,
    eye_c: T,
    eye_a: T,
    /// (1 + L, T, C): the residual after the embedding and after each block
    pub(super) resid: T,
    /// (L, T, C): the head's input after each block and after each attention half (the final
    /// norm of the residual; the residual itself where the stack ends on a norm): the logit lens
    /// is computed from it after the pass, a bounded block of rows at a time
    /// (`Model::lens_tops`), so no (L, T, V) buffer is ever held
    pub(super) lens_in: T,
    pub(super) lens_mid_in: T,
    /// (L, T, NH*HS): every head's output before W_o (before any ablation)
    pub(super) att: T,
}

/// Hook state of a model: none by default (the hooks then cost one branch per block).
pub struct Hooks<T> {
    /// per decoder layer (empty = no ablation)
    pub ablate: Vec<Option<LayerAblation<T>>>,
    /// per decoder layer of a MoE model: (max_seq, E) added to the router logits (-1e9 on removed experts)
    pub router: Vec<Option<T>>,
    pub capture: Option<Capture<T>>,
    /// (query, key) cells blocked on top of the decoder self-attention mask (causal for
    /// decoder-only models, look-ahead + padding for the encoder-decoder's decoder)
    pub mask_cells: Vec<(usize, usize)>,
    /// (query, key) cells blocked on top of the encoder-decoder's cross mask (source padding)
    pub cross_cells: Vec<(usize, usize)>,
    /// (max_seq, max_seq): the explicit self-attention mask of a decoder-only model with blocked cells
    pub mask: Option<T>,
}

impl<T> Default for Hooks<T> {
    fn default() -> Self {
        Hooks { ablate: vec![], router: vec![], capture: None, mask_cells: vec![], cross_cells: vec![], mask: None }
    }
}

/// What `hook_resid` left in the scratch `xn` it was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XnAfterHook {
    /// untouched: it still holds what the pass put there
    Kept,
    /// used as the lens's scratch: where it held a sublayer's input, the caller norms it again
    Overwritten,
}

/// Where in a block a hook runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookPoint {
    /// after the embedding (and positional encoding)
    Embed,
    /// after the attention half of block l (pre-norm: the residual add; post-norm: its norm)
    Mid(usize),
    /// after block l
    Block(usize),
}

fn identity(n: usize) -> Vec<f32> {
    let mut m = vec![0f32; n * n];
    (0..n).for_each(|i| m[i * n + i] = 1.0);
    m
}

impl<B: Backend> Model<B> {
    /// Called after the self-attention of layer `layer` of `stack` wrote every head's output into
    /// `att` (T rows at positions pos..): for a decoder layer, captures it (inspection pass) and
    /// applies the ablation; the encoder's layers have no hooks.
    pub(crate) fn hook_heads(&self, b: &mut B, (stack, layer): (Stack, usize), att: &B::T, t: usize, pos: usize) -> Result<()> {
        if stack != Stack::Decoder {
            return Ok(());
        }
        let a = self.cfg.num_heads * self.cfg.head_dim();
        if let Some(c) = &self.hooks.capture {
            if pos == 0 && t == c.t {
                b.matmul(&c.att, layer * t * a, att, 0, t, &c.eye_a, None)?;
            }
        }
        if let Some(Some(ab)) = self.hooks.ablate.get(layer) {
            b.inplace(att, Some(&ab.keep), t * a, EwOp::Mul)?;
            b.inplace(att, Some(&ab.add), t * a, EwOp::Add)?;
        }
        Ok(())
    }

    /// Called with the residual stream `x` (T rows from position `pos`) at `at`; `xn` is scratch.
    /// Captures the residual stream and its logit lens at `at`, and says whether `xn` was used as
    /// the lens's scratch.
    pub(crate) fn hook_resid(&self, b: &mut B, at: HookPoint, x: &B::T, xn: &B::T, t: usize, pos: usize) -> Result<XnAfterHook> {
        let Some(c) = &self.hooks.capture else { return Ok(XnAfterHook::Kept) };
        if pos != 0 || t != c.t {
            return Ok(XnAfterHook::Kept);
        }
        let d = self.cfg.d_model;
        let (lens_in, l) = match at {
            HookPoint::Embed => return b.matmul(&c.resid, 0, x, 0, t, &c.eye_c, None).map(|()| XnAfterHook::Kept),
            HookPoint::Mid(l) => (&c.lens_mid_in, l),
            HookPoint::Block(l) => {
                b.matmul(&c.resid, (l + 1) * t * d, x, 0, t, &c.eye_c, None)?;
                (&c.lens_in, l)
            }
        };
        // the lens's input: the final norm (pre-norm stacks; the post-norm decoder ends on a norm
        // already), exactly as the model's own head reads it
        match &self.weights.final_norm {
            Some(n) => {
                match &n.b {
                    Some(beta) => b.layernorm(xn, x, &n.w, beta, t, n.eps)?,
                    None => b.rmsnorm(xn, x, &n.w, t, n.eps)?,
                }
                b.matmul(lens_in, l * t * d, xn, 0, t, &c.eye_c, None)?;
                Ok(XnAfterHook::Overwritten)
            }
            None => b.matmul(lens_in, l * t * d, x, 0, t, &c.eye_c, None).map(|()| XnAfterHook::Kept),
        }
    }

    pub(super) fn start_capture(&mut self, b: &B, t: usize) -> Result<()> {
        self.free_capture(b);
        let (layers, d) = (self.cfg.num_layers, self.cfg.d_model);
        let a = self.cfg.num_heads * self.cfg.head_dim();
        self.hooks.capture = Some(Capture {
            t,
            eye_c: b.tensor(&[d, d], &identity(d), "inspect eye C")?,
            eye_a: b.tensor(&[a, a], &identity(a), "inspect eye A")?,
            resid: b.zeros(&[layers + 1, t, d], "inspect residuals")?,
            lens_in: b.zeros(&[layers, t, d], "inspect lens input")?,
            lens_mid_in: b.zeros(&[layers, t, d], "inspect lens mid input")?,
            att: b.zeros(&[layers, t, a], "inspect head outputs")?,
        });
        Ok(())
    }

    /// Drops the capture buffers (a GpuTensor destroys its buffer when it drops).
    pub(super) fn free_capture(&mut self, _b: &B) {
        self.hooks.capture = None;
    }

    /// Removes any ablation (its buffers are freed as they drop).
    pub fn clear_ablation(&mut self, _b: &B) {
        self.hooks.ablate.clear();
        self.hooks.router.clear();
        self.hooks.mask = None;
        self.hooks.mask_cells.clear();
        self.hooks.cross_cells.clear();
    }

    /// Decoder-only models: the explicit self-attention mask of T rows at positions pos.. (causal,
    /// minus the blocked cells), written into the hook's buffer; None when no cell is blocked.
    pub(crate) fn hook_mask(&self, b: &mut B, t: usize, pos: usize) -> Result<Option<&B::T>> {
        let Some(m) = &self.hooks.mask else { return Ok(None) };
        let cells = &self.hooks.mask_cells;
        let mask = crate::mask::Mask::from_fn(t, pos + t, |i, j| j <= pos + i && !cells.contains(&(pos + i, j)));
        b.write_f32(m, 0, &mask.data)?;
        Ok(Some(m))
    }

    /// Called after the router logits (T rows, E columns) of layer `layer` of `stack` are computed:
    /// in a decoder layer, removed experts get -1e9, so softmax gives them 0 and top-k never picks them.
    pub(crate) fn hook_router(&self, b: &mut B, (stack, layer): (Stack, usize), logits: &B::T, t: usize, e: usize) -> Result<()> {
        if stack != Stack::Decoder {
            return Ok(());
        }
        if let Some(Some(add)) = self.hooks.router.get(layer) {
            b.inplace(logits, Some(add), t * e, EwOp::Add)?;
        }
        Ok(())
    }

    /// Switches heads off for every following pass (generation included) until `clear_ablation`.
    /// Mean ablation needs `means[layer]` (NH*HS): every head's mean output over a sequence (see
    /// `Report`/`head_means`).
    pub fn set_ablation(&mut self, b: &B, ab: &Ablation, means: Option<&[Vec<f32>]>) -> Result<()> {
        let (layers, nh, hs) = (self.cfg.num_layers, self.cfg.num_heads, self.cfg.head_dim());
        let (a, s) = (nh * hs, self.cfg.max_seq_len);
        for &(l, h) in &ab.heads {
            if l >= layers || h >= nh {
                return Err(TfError::Input(format!(
                    "cannot ablate head {l}.{h}: the model has {layers} layers of {nh} heads (0.0 to {}.{})",
                    layers - 1,
                    nh - 1
                )));
            }
        }
        let (num_e, top_k) = self.cfg.moe.as_ref().map(|m| (m.num_experts, m.top_k)).unwrap_or((0, 0));
        for &(l, e) in &ab.experts {
            if num_e == 0 {
                return Err(TfError::Input("only mixture-of-experts models have experts to remove".into()));
            }
            if l >= layers || e >= num_e {
                return Err(TfError::Input(format!("cannot remove expert {l}.{e}: the model has {layers} layers of {num_e} experts")));
            }
        }
        for l in 0..layers {
            let n = ab.experts.iter().filter(|x| x.0 == l).count();
            if num_e > 0 && num_e.saturating_sub(n) < top_k {
                return Err(TfError::Input(format!(
                    "layer {l} would keep {} experts but routes every token to {top_k}",
                    num_e.saturating_sub(n)
                )));
            }
        }
        let encdec = self.cfg.arch == Arch::EncoderDecoder;
        for &(q, k) in &ab.mask_cells {
            if q >= s || k >= s {
                return Err(TfError::Input(format!(
                    "cannot block mask cell {q}.{k}: the model's context is {s} positions (0 to {})",
                    s - 1
                )));
            }
            if k > q {
                return Err(TfError::Input(format!("mask cell {q}.{k} is already blocked: query {q} never sees the later key {k}")));
            }
        }
        if !ab.cross_cells.is_empty() && !encdec {
            return Err(TfError::Input("only encoder_decoder models have a cross mask to block cells of".into()));
        }
        for &(q, k) in &ab.cross_cells {
            if q >= s || k >= s {
                return Err(TfError::Input(format!(
                    "cannot block cross cell {q}.{k}: the model's context is {s} positions (0 to {})",
                    s - 1
                )));
            }
        }
        if ab.heads.is_empty() && ab.experts.is_empty() && ab.mask_cells.is_empty() && ab.cross_cells.is_empty() {
            return Err(TfError::Input("nothing to ablate: choose a head, an expert or a mask cell".into()));
        }
        if ab.kind == AblationKind::Mean
            && !ab.heads.is_empty()
            && means.is_none_or(|m| m.len() != layers || m.iter().any(|r| r.len() != a))
        {
            return Err(TfError::Input("mean ablation needs every head's mean output".into()));
        }
        self.clear_ablation(b);
        let mut per = vec![];
        for l in 0..layers {
            let heads: Vec<usize> = ab.heads.iter().filter(|x| x.0 == l).map(|x| x.1).collect();
            if heads.is_empty() {
                per.push(None);
                continue;
            }
            let (mut keep, mut add) = (vec![1f32; a], vec![0f32; a]);
            for &h in &heads {
                for c in h * hs..(h + 1) * hs {
                    keep[c] = 0.0;
                    if let (AblationKind::Mean, Some(m)) = (ab.kind, means) {
                        add[c] = m[l][c];
                    }
                }
            }
            let (keep, add) = (keep.repeat(s), add.repeat(s));
            per.push(Some(LayerAblation {
                keep: b.tensor(&[s, a], &keep, "ablation keep")?,
                add: b.tensor(&[s, a], &add, "ablation add")?,
            }));
        }
        self.hooks.ablate = per;
        self.hooks.mask_cells = ab.mask_cells.clone();
        self.hooks.cross_cells = ab.cross_cells.clone();
        if !encdec && !ab.mask_cells.is_empty() {
            self.hooks.mask = Some(b.zeros(&[s, s], "blocked-cell mask")?);
        }
        if !ab.experts.is_empty() {
            self.hooks.router = (0..layers)
                .map(|l| {
                    let removed: Vec<usize> = ab.experts.iter().filter(|x| x.0 == l).map(|x| x.1).collect();
                    if removed.is_empty() {
                        return Ok(None);
                    }
                    let row: Vec<f32> = (0..num_e).map(|e| if removed.contains(&e) { -1e9 } else { 0.0 }).collect();
                    b.tensor(&[s, num_e], &row.repeat(s), "expert removal").map(Some)
                })
                .collect::<Result<_>>()?;
        }
        Ok(())
    }
}
