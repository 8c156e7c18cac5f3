//! `tinyformer inspect`: the look-inside tools of model::inspect as JSON (issue 14).

use serde_json::{json, Value};

use crate::cli::args::{AblateMode, InspectArgs};
use crate::cli::model_cmds::{backend, budget, input_ids, read_model_file, Which};
use crate::error::{Result, TfError};
use crate::model::inspect::{parse_pairs, Ablation, AblationKind};
use crate::model::{Backend, Model};

/// The ablation the flags ask for, checked before the model is read.
fn ablation(a: &InspectArgs) -> Result<Option<Ablation>> {
    let kind = match a.ablate_mode {
        AblateMode::Zero => AblationKind::Zero,
        AblateMode::Mean => AblationKind::Mean,
    };
    let mut ablation = a.ablate.as_deref().map(|s| Ablation::parse(s, kind)).transpose()?;
    if let Some(s) = &a.remove_experts {
        let experts = parse_pairs(s, "--remove-experts", "LAYER.EXPERT")?;
        ablation.get_or_insert_with(|| Ablation::heads(vec![], kind)).experts = experts;
    }
    if let Some(s) = &a.block_cells {
        ablation.get_or_insert_with(|| Ablation::heads(vec![], kind)).mask_cells = parse_pairs(s, "--block-cells", "QUERY.KEY")?;
    }
    if let Some(s) = &a.block_cross_cells {
        ablation.get_or_insert_with(|| Ablation::heads(vec![], kind)).cross_cells = parse_pairs(s, "--block-cross-cells", "QUERY.KEY")?;
    }
    Ok(ablation)
}

async fn inspect_with<B: Backend>(b: &mut B, bytes: &[u8], a: &InspectArgs, ablation: Option<Ablation>) -> Result<Value> {
    let mut m = Model::load_within(b, bytes, &budget(&a.model))?;
    let ids = input_ids(&m, &a.ids, &a.prompt)?;
    let tgt: Option<Vec<u32>> = a.tgt_ids.as_ref().map(|t| t.0.clone());
    let induction = a.induction;
    let seed: u64 = a.seed.unwrap_or(0);
    let v = match induction {
        Some(n) => {
            let r = m.induction_test(b, n, seed, ids.as_deref(), ablation.as_ref()).await?;
            json!({"arch": m.cfg.arch.as_str(), "backend": b.kind(), "induction_test": r})
        }
        None => {
            let ids = ids.ok_or_else(|| TfError::Input("--ids 3,1,4 or --prompt TEXT is required (or --induction N)".into()))?;
            let r = m.inspect(b, &ids, tgt.as_deref(), ablation.as_ref()).await?;
            let mut v = json!({
                "arch": m.cfg.arch.as_str(),
                "backend": b.kind(),
                "ids": r.ids,
                "logit_lens": r.logit_lens,
                "logit_lens_mid": r.logit_lens_mid,
                "head_scores": r.head_scores,
                "residual_norms": r.residual_norms,
                "attention_entropy": r.attention_entropy,
                "surprise": r.surprise,
            });
            if let Some(ab) = &r.ablation {
                v["logits_last"] = json!(ab.logits_last);
                v["kl_last"] = json!(ab.kl_last);
                v["ablation"] = json!({"heads": ab.heads, "experts": ab.experts, "mask_cells": ab.mask_cells, "cross_cells": ab.cross_cells, "kind": ab.kind, "top1_before": ab.top1_before, "top1_after": ab.top1_after,
                    "top1_prob_before": ab.top1_prob_before, "top1_prob_after": ab.top1_prob_after});
            }
            v
        }
    };
    m.clear_ablation(b);
    Ok(v)
}

pub fn inspect(a: &InspectArgs) -> Result<String> {
    let ablation = ablation(a)?;
    let bytes = read_model_file(&a.model)?;
    let v = match backend(a.backend)? {
        Which::Gpu(mut b) => pollster::block_on(inspect_with(&mut b, &bytes, a, ablation))?,
        Which::Cpu(mut b) => pollster::block_on(inspect_with(&mut b, &bytes, a, ablation))?,
        Which::Reference(mut b) => pollster::block_on(inspect_with(&mut b, &bytes, a, ablation))?,
    };
    let s = serde_json::to_string(&v).unwrap_or_default();
    match &a.out {
        Some(f) => {
            std::fs::write(f, s).map_err(|e| TfError::Input(format!("cannot write {}: {e}", crate::error::quote(f))))?;
            Ok(String::new())
        }
        None => Ok(s),
    }
}
