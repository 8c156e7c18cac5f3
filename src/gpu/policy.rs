//! The device-to-kernel policy: which form each kernel family takes on a device (the matmul of
//! few-row and many-row passes, attention's and the norms' row mapping, fused epilogues, 16-bit
//! weights widened at load). The core chooses it from what it knows of the adapter
//! ([`KernelPolicy::for_adapter`]); the page only reports the adapter's facts (its architecture,
//! which wgpu's WebGPU backend leaves empty) and shows the choice, and the benchmarks override it,
//! deserialised from the names below at the wasm and CLI edges.

use serde::{Deserialize, Serialize};

use crate::gpu::{matmul::MatmulKind, RowKind};

/// The kernels a GPU model runs. Serialised with the names the page and the benchmarks use:
/// `{fused, few_rows, many_rows, attention, norms, widen16}`, the matmul kinds as `"naive"`,
/// `"tiled"`, `"tiled4"`, `"gemv"`, `"gemv_subgroup"`, `"reg"`, `"rows"`, the row mappings as
/// `"workgroup"` or `"rows"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelPolicy {
    /// fused epilogues and fused SwiGLU (off: the unfused sequence, for benchmarks)
    pub fused: bool,
    /// the matmul of passes of fewer than `matmul::SMALL_M` rows (cached decoding); `Rows` also
    /// takes the invocation-per-row attention, add + norm and greedy sampling there
    pub few_rows: MatmulKind,
    /// the matmul of passes of `matmul::SMALL_M` rows or more (prefill)
    pub many_rows: MatmulKind,
    /// attention of passes of `matmul::SMALL_M` query rows or more
    pub attention: RowKind,
    /// the norms (norm, add + norm) of passes of `matmul::SMALL_M` rows or more
    pub norms: RowKind,
    /// 16-bit checkpoint weights widened to f32 at load (for models loaded after it is set)
    pub widen16: bool,
}

impl KernelPolicy {
    /// The policy for an adapter. A GPU emulated on the CPU (llvmpipe natively; SwiftShader in the
    /// browser) runs workgroup barriers slowly and unpacks 16-bit values for more than the memory it
    /// saves, so there every pass takes the barrier-free kernels (prefill's register-blocked
    /// matmul, decoding's one invocation per output, attention and the norms an invocation per
    /// row) and 16-bit weights are widened (DECISIONS.md "Barrier-free kernels on CPU-emulated GPUs" and
    /// "16-bit weights stay 16-bit on GPUs").
    /// A real GPU takes the tiled vec4 matmul, the GEMV and the workgroup kernels.
    pub fn for_adapter(cpu_emulated: bool) -> KernelPolicy {
        if cpu_emulated {
            KernelPolicy {
                fused: true,
                few_rows: MatmulKind::Rows,
                many_rows: MatmulKind::Reg,
                attention: RowKind::Invocation,
                norms: RowKind::Invocation,
                widen16: true,
            }
        } else {
            KernelPolicy {
                fused: true,
                few_rows: MatmulKind::Gemv,
                many_rows: MatmulKind::Tiled4,
                attention: RowKind::Workgroup,
                norms: RowKind::Workgroup,
                widen16: false,
            }
        }
    }

    /// `now` with the fields `patch` names replaced (a JSON object of some of `fused`, `few_rows`,
    /// `many_rows`, `attention`, `norms`, by the names above): what the benchmarks switch between
    /// passes. `widen16` is a load-time choice and is refused here, as is any other key or name.
    pub fn patched(now: KernelPolicy, patch: &serde_json::Value) -> crate::Result<KernelPolicy> {
        let bad = |m: String| crate::TfError::Input(format!("GPU kernels: {m}"));
        let fields = patch.as_object().ok_or_else(|| bad(format!("expected an object of kernel names, got {patch}")))?;
        let mut v = serde_json::to_value(now).map_err(|e| bad(e.to_string()))?;
        for (key, value) in fields {
            match (key.as_str(), v.get_mut(key)) {
                ("widen16", _) => return Err(bad("widen16 applies at load: set it before loading".into())),
                (_, Some(slot)) => *slot = value.clone(),
                (_, None) => return Err(bad(format!("unknown key {key:?} (fused, few_rows, many_rows, attention, norms)"))),
            }
        }
        serde_json::from_value(v).map_err(|e| bad(e.to_string()))
    }

    /// Whether an adapter is a GPU emulated on the CPU: wgpu's device type `Cpu` (natively, and in
    /// the browser for a fallback adapter), or an architecture the browser names as one.
    pub fn cpu_emulated(device_type_cpu: bool, architecture: &str) -> bool {
        device_type_cpu || matches!(architecture, "swiftshader" | "llvmpipe")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_page_s() {
        let p = serde_json::to_value(KernelPolicy::for_adapter(true)).expect("serialises");
        let want = serde_json::json!({"fused": true, "few_rows": "rows", "many_rows": "reg", "attention": "rows", "norms": "rows", "widen16": true});
        assert_eq!(p, want);
        let back: KernelPolicy = serde_json::from_value(want).expect("deserialises");
        assert_eq!(back, KernelPolicy::for_adapter(true));
        let gpu = serde_json::to_value(KernelPolicy::for_adapter(false)).expect("serialises");
        let want = serde_json::json!({"fused": true, "few_rows": "gemv", "many_rows": "tiled4", "attention": "workgroup", "norms": "workgroup", "widen16": false});
        assert_eq!(gpu, want);
        assert_eq!(serde_json::to_value(MatmulKind::GemvSubgroup).expect("serialises"), "gemv_subgroup");
        assert!(serde_json::from_value::<MatmulKind>(serde_json::json!("fast")).is_err());
    }

    #[test]
    fn a_patch_changes_only_what_it_names() {
        let now = KernelPolicy::for_adapter(false);
        let p = KernelPolicy::patched(now, &serde_json::json!({"few_rows": "rows", "norms": "rows"})).expect("valid");
        assert_eq!(p, KernelPolicy { few_rows: MatmulKind::Rows, norms: RowKind::Invocation, ..now });
        for bad in [
            serde_json::json!({"few_rows": "fast"}),
            serde_json::json!({"speed": 1}),
            serde_json::json!({"widen16": true}),
            serde_json::json!("rows"),
        ] {
            let e = KernelPolicy::patched(now, &bad).expect_err("refused").to_string();
            assert!(e.starts_with("GPU kernels: ") && !e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn swiftshader_is_emulated_whatever_wgpu_reports() {
        assert!(KernelPolicy::cpu_emulated(false, "swiftshader"));
        assert!(KernelPolicy::cpu_emulated(true, ""));
        assert!(!KernelPolicy::cpu_emulated(false, "ampere"));
    }
}
