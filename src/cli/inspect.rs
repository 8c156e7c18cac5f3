//! `tinyformer inspect`: the look-inside tools of model::inspect as JSON.

use serde_json::json;

use crate::cli::args::InspectArgs;
use crate::cli::model_cmds::{emit, input_ids, open};
use crate::error::{Result, TfError};
use crate::model::inspect::{parse_pairs, Ablation, AblationKind};

/// The ablation the flags ask for, checked before the model is read.
fn ablation(a: &InspectArgs) -> Result<Option<Ablation>> {
    let kind: AblationKind = a.ablate_mode.into();
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

pub fn inspect(a: &InspectArgs) -> Result<String> {
    let ablation = ablation(a)?;
    let mut s = open(&a.session)?;
    let ids = input_ids(&s, &a.input.ids, &a.input.prompt)?;
    let tgt: Option<Vec<u32>> = a.input.tgt_ids.as_ref().map(|t| t.0.clone());
    let (arch, backend) = (s.config().arch.as_str(), s.backend());
    let v = match a.induction {
        Some(n) => {
            let r = pollster::block_on(s.induction_test(n, a.seed.unwrap_or(0), ids.as_deref(), ablation.as_ref()))?;
            json!({"arch": arch, "backend": backend, "induction_test": r})
        }
        None => {
            let ids = ids.ok_or_else(|| TfError::Input("--ids 3,1,4 or --prompt TEXT is required (or --induction N)".into()))?;
            let r = pollster::block_on(s.inspect(&ids, tgt.as_deref(), ablation.as_ref()))?;
            let mut v = json!({
                "arch": arch,
                "backend": backend,
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
    emit(&v, &a.out)
}
