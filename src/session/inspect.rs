//! Passes that look inside the model: one forward pass with its attention maps, masks and MoE
//! routing, the evaluation loss, the look-inside report and the induction test (model::inspect), and
//! the page's Inspect and ablated-generation requests with their options ([`PageOpts`]) as JSON.

use serde_json::{json, Value};

use super::Session;
use crate::error::{Result, TfError};
use crate::model::inspect::{Ablation, AblationKind, InductionTest, Report};
use crate::model::run::{ForwardOut, GenConfig, BOS_ID};

/// How a switched-off head is replaced: the page's `mode` ("zero" or "mean") and the command line's
/// `--ablate-mode`, read into this at the edge; any other name is refused in one line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::ValueEnum))]
#[serde(try_from = "String")]
pub enum AblateMode {
    /// the head's output is zero before the output projection
    #[default]
    Zero,
    /// the head's output is replaced by its mean over the sequence
    Mean,
}

impl TryFrom<String> for AblateMode {
    type Error = String;
    fn try_from(name: String) -> std::result::Result<Self, String> {
        match name.as_str() {
            "zero" => Ok(AblateMode::Zero),
            "mean" => Ok(AblateMode::Mean),
            other => Err(format!("ablation mode must be zero or mean, got '{other}'")),
        }
    }
}

impl From<AblateMode> for AblationKind {
    fn from(m: AblateMode) -> Self {
        match m {
            AblateMode::Zero => AblationKind::Zero,
            AblateMode::Mean => AblationKind::Mean,
        }
    }
}

/// Options of the page's inspect request.
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct PageOpts {
    /// [[layer, head], ...]
    #[serde(default)]
    pub ablate: Vec<(usize, usize)>,
    /// [[layer, expert], ...] removed from routing
    #[serde(default)]
    pub experts: Vec<(usize, usize)>,
    /// [[query, key], ...] decoder self-attention cells to block
    #[serde(default)]
    pub mask_cells: Vec<(usize, usize)>,
    /// [[query, key], ...] cross-attention cells to block (encoder-decoder)
    #[serde(default)]
    pub cross_cells: Vec<(usize, usize)>,
    /// zero (the default) or mean
    pub mode: Option<AblateMode>,
    /// run the induction test with this many random tokens (repeated twice) instead of `ids`
    pub induction: Option<usize>,
    pub seed: Option<u64>,
    /// generate_ablated: tokens to generate
    pub max_new_tokens: Option<usize>,
}

impl PageOpts {
    fn ablation(&self) -> Result<Option<Ablation>> {
        let kind = self.mode.unwrap_or_default().into();
        let any = !self.ablate.is_empty() || !self.experts.is_empty() || !self.mask_cells.is_empty() || !self.cross_cells.is_empty();
        Ok(any.then(|| Ablation {
            heads: self.ablate.clone(),
            kind,
            experts: self.experts.clone(),
            mask_cells: self.mask_cells.clone(),
            cross_cells: self.cross_cells.clone(),
        }))
    }
}

impl Session {
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

    /// The page's Inspect request: the report (or, with `o.induction`, the induction test and the
    /// report of its sequence) as JSON, with `pieces`: a display string for every id it mentions. `tgt`
    /// is the decoder input of the encoder-decoder.
    pub async fn inspect_page(&mut self, ids: &[u32], tgt: Option<&[u32]>, o: &PageOpts) -> Result<Value> {
        self.running = None;
        let ab = o.ablation()?;
        let encdec = self.is_encdec();
        let (mut v, r) = with_model!(&mut self.engine, |b, m| match o.induction {
            Some(n) => {
                let src = if encdec { Some(ids) } else { None };
                let it = m.induction_test(b, n, o.seed.unwrap_or(0), src, ab.as_ref()).await?;
                let seq = [it.half.clone(), it.half.clone()].concat();
                let mut v = json!({ "induction_test": it });
                let (i2, t2) = if encdec { (ids, Some(&seq[..])) } else { (&seq[..], None) };
                let r = m.inspect(b, i2, t2, ab.as_ref()).await?;
                v["report"] = serde_json::to_value(&r).unwrap_or_default();
                (v, r)
            }
            None => {
                let r = m.inspect(b, ids, tgt, ab.as_ref()).await?;
                (json!({ "report": r }), r)
            }
        });
        let lens_ids = r.logit_lens.iter().chain(&r.logit_lens_mid).flat_map(|l| l.top_ids.iter().flatten().copied());
        let ab_ids = r.ablation.iter().flat_map(|a| [a.top1_before, a.top1_after]);
        let mentioned: Vec<u32> = r.ids.iter().copied().chain(lens_ids).chain(ab_ids).collect();
        let mut pieces = serde_json::Map::new();
        for (id, piece) in mentioned.iter().zip(self.pieces(&mentioned)) {
            pieces.entry(id.to_string()).or_insert(piece.into());
        }
        v["pieces"] = Value::Object(pieces);
        Ok(v)
    }

    /// The page's greedy generation with heads, experts or mask cells switched off (mean ablation: the
    /// heads' means over this prompt), then the ablation is removed: {ids (the generated ones), text}.
    pub async fn generate_ablated(&mut self, ids: &[u32], o: &PageOpts) -> Result<Value> {
        self.running = None;
        let ab = o.ablation()?.ok_or_else(|| TfError::Input("choose a head, an expert or an attention cell to switch off".into()))?;
        let encdec = self.is_encdec();
        // greedy under the checkpoint's output constraint, as any generation of the session
        let constraint = self.text.constraint.clone();
        let out = with_model!(&mut self.engine, |b, m| {
            let means = if ab.kind == AblationKind::Mean { Some(m.head_means(b, ids, None).await?) } else { None };
            m.set_ablation(b, &ab, means.as_deref())?;
            let cfg = GenConfig { max_new_tokens: o.max_new_tokens.unwrap_or(24), constraint, ..Default::default() };
            let out = if encdec { m.generate(b, &[BOS_ID], Some(ids), cfg).await } else { m.generate(b, ids, None, cfg).await };
            m.clear_ablation(b);
            out
        })?;
        let start = if encdec { 1 } else { ids.len() };
        let new = out[start.min(out.len())..].to_vec();
        Ok(json!({ "ids": new, "text": self.decode(&new).unwrap_or_default() }))
    }
}
