//! `tinyformer inspect`: the look-inside tools of model::inspect as JSON (issue 14).

use serde_json::{json, Value};

use crate::cli::args::Args;
use crate::cli::model_cmds::{backend, input_ids, read_model_file, Which};
use crate::error::{Result, TfError};
use crate::model::inspect::{parse_pairs, Ablation, AblationKind};
use crate::model::{Backend, Model};

async fn inspect_with<B: Backend>(b: &mut B, bytes: &[u8], a: &Args) -> Result<Value> {
    let mut m = Model::load(b, bytes)?;
    let ids = input_ids(&m, a, "ids")?;
    let tgt: Option<Vec<u32>> = a.list("tgt-ids")?;
    let kind = match a.str("ablate-mode")?.as_deref().unwrap_or("zero") {
        "zero" => AblationKind::Zero,
        "mean" => AblationKind::Mean,
        other => return Err(TfError::Input(format!("--ablate-mode must be zero or mean, got '{other}'"))),
    };
    let mut ablation = a.str("ablate")?.map(|s| Ablation::parse(&s, kind)).transpose()?;
    if let Some(s) = a.str("remove-experts")? {
        let experts = parse_pairs(&s, "--remove-experts", "EXPERT")?;
        ablation.get_or_insert_with(|| Ablation::heads(vec![], kind)).experts = experts;
    }
    let induction: Option<usize> = a.get("induction")?;
    let seed: u64 = a.get("seed")?.unwrap_or(0);
    a.finish()?;
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
                v["ablation"] = json!({"heads": ab.heads, "experts": ab.experts, "kind": ab.kind, "top1_before": ab.top1_before, "top1_after": ab.top1_after,
                    "top1_prob_before": ab.top1_prob_before, "top1_prob_after": ab.top1_prob_after});
            }
            v
        }
    };
    m.clear_ablation(b);
    m.free(b);
    Ok(v)
}

pub fn inspect(a: &Args) -> Result<String> {
    let (_, bytes) = read_model_file(a)?;
    let out_file = a.str("out")?;
    let v = match backend(a)? {
        Which::Gpu(mut b) => pollster::block_on(inspect_with(&mut b, &bytes, a))?,
        Which::Cpu(mut b) => pollster::block_on(inspect_with(&mut b, &bytes, a))?,
    };
    let s = serde_json::to_string(&v).unwrap_or_default();
    match out_file {
        Some(f) => {
            std::fs::write(&f, s).map_err(|e| TfError::Input(format!("cannot write '{f}': {e}")))?;
            Ok(String::new())
        }
        None => Ok(s),
    }
}
