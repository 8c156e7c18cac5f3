//! Foreign checkpoints: the Hugging Face directories and llama2.c model.bin that
//! train/hf_fixtures.py made with `transformers`, planned and read by src/formats onto our tensor names and
//! layouts. A plain f64 forward of each family over *our* tensors (written here, independent of the engine)
//! must give transformers' logits and attention maps: that proves the renaming, GPT-2's Conv1D transposes
//! and c_attn split, and the RoPE permutation (HF rotate-half to our adjacent pairs), including Qwen2's q/k
//! biases and GPT-NeoX's fused per-head query_key_value with only its rotary dims permuted
//! (train/hf_neox_fixtures.py). The llama2.c export of the same Llama must read back to the very same tensors.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use tinyformer::formats::{self, DType, DirFiles, Family, Files, Format, MemFiles};

fn dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf_models").join(name)
}

fn expected(name: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir(name).join("expected.json")).unwrap()).unwrap()
}

type Tensors = HashMap<String, (Vec<usize>, Vec<f32>)>;
/// Attention probabilities [layer][head][query][key].
type Maps = Vec<Vec<Vec<Vec<f64>>>>;

fn load(files: &dyn Files, bin: Option<&str>) -> (formats::Plan, Tensors) {
    let plan = formats::plan(files, bin).unwrap();
    let t = formats::read_tensors(files, &plan).unwrap().into_iter().map(|(n, s, d)| (n, (s, d))).collect();
    (plan, t)
}

/// y[r][o] = sum_i x[r][i] * w[o][i] (+ b[o]): PyTorch's Linear with w (out, in).
fn linear(x: &[Vec<f64>], t: &Tensors, name: &str, bias: bool) -> Vec<Vec<f64>> {
    let (shape, w) = &t[&format!("{name}.weight")];
    let (o, i) = (shape[0], shape[1]);
    let b = bias.then(|| &t[&format!("{name}.bias")].1);
    x.iter()
        .map(|row| {
            assert_eq!(row.len(), i, "{name}");
            (0..o).map(|j| (0..i).map(|k| row[k] * w[j * i + k] as f64).sum::<f64>() + b.map_or(0.0, |b| b[j] as f64)).collect()
        })
        .collect()
}

fn layer_norm(x: &[Vec<f64>], t: &Tensors, name: &str, eps: f64) -> Vec<Vec<f64>> {
    let (w, b) = (&t[&format!("{name}.weight")].1, &t[&format!("{name}.bias")].1);
    x.iter()
        .map(|r| {
            let n = r.len() as f64;
            let mean = r.iter().sum::<f64>() / n;
            let var = r.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
            r.iter().enumerate().map(|(k, v)| (v - mean) / (var + eps).sqrt() * w[k] as f64 + b[k] as f64).collect()
        })
        .collect()
}

fn rms_norm(x: &[Vec<f64>], w: &[f32], eps: f64) -> Vec<Vec<f64>> {
    x.iter()
        .map(|r| {
            let ms = r.iter().map(|v| v * v).sum::<f64>() / r.len() as f64;
            r.iter().enumerate().map(|(k, v)| v / (ms + eps).sqrt() * w[k] as f64).collect()
        })
        .collect()
}

/// Causal attention: q [T][nh*hd], k/v [T][nkv*hd] -> (output [T][nh*hd], probabilities [head][q][k]).
fn attention(q: &[Vec<f64>], k: &[Vec<f64>], v: &[Vec<f64>], nh: usize, nkv: usize, hd: usize) -> (Vec<Vec<f64>>, Vec<Vec<Vec<f64>>>) {
    let t = q.len();
    let mut out = vec![vec![0.0; nh * hd]; t];
    let mut maps = vec![vec![vec![0.0; t]; t]; nh];
    for h in 0..nh {
        let g = h / (nh / nkv);
        for i in 0..t {
            let s: Vec<f64> =
                (0..=i).map(|j| (0..hd).map(|c| q[i][h * hd + c] * k[j][g * hd + c]).sum::<f64>() / (hd as f64).sqrt()).collect();
            let m = s.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
            let z: f64 = e.iter().sum();
            for j in 0..=i {
                maps[h][i][j] = e[j] / z;
                for c in 0..hd {
                    out[i][h * hd + c] += e[j] / z * v[j][g * hd + c];
                }
            }
        }
    }
    (out, maps)
}

fn add(x: &mut [Vec<f64>], y: &[Vec<f64>]) {
    for (a, b) in x.iter_mut().zip(y) {
        for (p, q) in a.iter_mut().zip(b) {
            *p += q;
        }
    }
}

/// Logits [T][V] and attention maps [layer][head][q][k] of GPT-2 over our tensor names.
fn gpt2_forward(p: &formats::Plan, t: &Tensors, ids: &[usize]) -> (Vec<Vec<f64>>, Maps) {
    let d = &p.dims;
    let (emb, pos) = (&t["token_embedding.weight"].1, &t["position_embedding.weight"].1);
    let mut x: Vec<Vec<f64>> = ids
        .iter()
        .enumerate()
        .map(|(i, &id)| (0..d.d_model).map(|c| (emb[id * d.d_model + c] + pos[i * d.d_model + c]) as f64).collect())
        .collect();
    let eps = d.norm_eps as f64;
    let mut maps = vec![];
    for l in 0..d.num_layers {
        let pfx = format!("decoder_layers.{l}");
        let h = layer_norm(&x, t, &format!("{pfx}.norm1"), eps);
        let q = linear(&h, t, &format!("{pfx}.self_attn.w_q"), true);
        let k = linear(&h, t, &format!("{pfx}.self_attn.w_k"), true);
        let v = linear(&h, t, &format!("{pfx}.self_attn.w_v"), true);
        let (o, m) = attention(&q, &k, &v, d.num_heads, d.num_kv_heads, d.head_dim);
        maps.push(m);
        add(&mut x, &linear(&o, t, &format!("{pfx}.self_attn.w_o"), true));
        let h = layer_norm(&x, t, &format!("{pfx}.norm2"), eps);
        let gelu = |v: f64| 0.5 * v * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v * v * v)).tanh());
        let f: Vec<Vec<f64>> =
            linear(&h, t, &format!("{pfx}.feed_forward.linear1"), true).into_iter().map(|r| r.into_iter().map(gelu).collect()).collect();
        add(&mut x, &linear(&f, t, &format!("{pfx}.feed_forward.linear2"), true));
    }
    let x = layer_norm(&x, t, "ln_f", eps);
    // GPT-2's head is tied to wte: our plan holds no lm_head tensor
    (linear(&x, t, "token_embedding", false), maps)
}

/// Logits and maps of Llama / Qwen2 over our tensor names: RoPE on adjacent pairs (2i, 2i + 1).
fn llama_forward(p: &formats::Plan, t: &Tensors, ids: &[usize]) -> (Vec<Vec<f64>>, Maps) {
    let d = &p.dims;
    let emb = &t["tok_embeddings.weight"].1;
    let mut x: Vec<Vec<f64>> = ids.iter().map(|&id| (0..d.d_model).map(|c| emb[id * d.d_model + c] as f64).collect()).collect();
    let eps = d.norm_eps as f64;
    let hd = d.head_dim;
    let rope = |m: &mut Vec<Vec<f64>>, heads: usize| {
        for (pos, row) in m.iter_mut().enumerate() {
            for h in 0..heads {
                for i in 0..hd / 2 {
                    let ang = pos as f64 * (d.rope_theta as f64).powf(-((2 * i) as f64) / hd as f64);
                    let (a, b) = (row[h * hd + 2 * i], row[h * hd + 2 * i + 1]);
                    row[h * hd + 2 * i] = a * ang.cos() - b * ang.sin();
                    row[h * hd + 2 * i + 1] = a * ang.sin() + b * ang.cos();
                }
            }
        }
    };
    let mut maps = vec![];
    for l in 0..d.num_layers {
        let pfx = format!("layers.{l}");
        let h = rms_norm(&x, &t[&format!("{pfx}.attention_norm.weight")].1, eps);
        let mut q = linear(&h, t, &format!("{pfx}.attention.wq"), d.qkv_bias);
        let mut k = linear(&h, t, &format!("{pfx}.attention.wk"), d.qkv_bias);
        let v = linear(&h, t, &format!("{pfx}.attention.wv"), d.qkv_bias);
        rope(&mut q, d.num_heads);
        rope(&mut k, d.num_kv_heads);
        let (o, m) = attention(&q, &k, &v, d.num_heads, d.num_kv_heads, hd);
        maps.push(m);
        add(&mut x, &linear(&o, t, &format!("{pfx}.attention.wo"), false));
        let h = rms_norm(&x, &t[&format!("{pfx}.ffn_norm.weight")].1, eps);
        let (g, u) = (linear(&h, t, &format!("{pfx}.feed_forward.w1"), false), linear(&h, t, &format!("{pfx}.feed_forward.w3"), false));
        let f: Vec<Vec<f64>> = g.iter().zip(&u).map(|(g, u)| g.iter().zip(u).map(|(g, u)| g / (1.0 + (-g).exp()) * u).collect()).collect();
        add(&mut x, &linear(&f, t, &format!("{pfx}.feed_forward.w2"), false));
    }
    let x = rms_norm(&x, &t["norm.weight"].1, eps);
    // a tied head is the embedding (no output tensor planned)
    (linear(&x, t, if d.tied { "tok_embeddings" } else { "output" }, false), maps)
}

/// Logits and maps of GPT-NeoX over our tensor names: RoPE on the first `rotary_dims` of each head in adjacent
/// pairs (freq theta^(-2i/rotary_dims)), the rest passed through; the erf GELU; the parallel residual
/// x + attn(ln1(x)) + mlp(ln2(x)) or the sequential block; attention biases as the config says; the untied head.
fn neox_forward(p: &formats::Plan, t: &Tensors, ids: &[usize]) -> (Vec<Vec<f64>>, Maps) {
    let d = &p.dims;
    let emb = &t["token_embedding.weight"].1;
    let mut x: Vec<Vec<f64>> = ids.iter().map(|&id| (0..d.d_model).map(|c| emb[id * d.d_model + c] as f64).collect()).collect();
    let (eps, hd) = (d.norm_eps as f64, d.head_dim);
    let rot = if d.rotary_dims == 0 { hd } else { d.rotary_dims };
    let rope = |m: &mut Vec<Vec<f64>>| {
        for (pos, row) in m.iter_mut().enumerate() {
            for h in 0..d.num_heads {
                for i in 0..rot / 2 {
                    let ang = pos as f64 * (d.rope_theta as f64).powf(-((2 * i) as f64) / rot as f64);
                    let (a, b) = (row[h * hd + 2 * i], row[h * hd + 2 * i + 1]);
                    row[h * hd + 2 * i] = a * ang.cos() - b * ang.sin();
                    row[h * hd + 2 * i + 1] = a * ang.sin() + b * ang.cos();
                }
            }
        }
    };
    let gelu = |v: f64| 0.5 * v * (1.0 + libm::erf(v / std::f64::consts::SQRT_2));
    let mut maps = vec![];
    for l in 0..d.num_layers {
        let pfx = format!("decoder_layers.{l}");
        let h = layer_norm(&x, t, &format!("{pfx}.norm1"), eps);
        let mut q = linear(&h, t, &format!("{pfx}.self_attn.w_q"), d.qkv_bias);
        let mut k = linear(&h, t, &format!("{pfx}.self_attn.w_k"), d.qkv_bias);
        let v = linear(&h, t, &format!("{pfx}.self_attn.w_v"), d.qkv_bias);
        rope(&mut q);
        rope(&mut k);
        let (o, m) = attention(&q, &k, &v, d.num_heads, d.num_heads, hd);
        maps.push(m);
        let a = linear(&o, t, &format!("{pfx}.self_attn.w_o"), d.qkv_bias);
        let mlp = |x: &[Vec<f64>]| {
            let h = layer_norm(x, t, &format!("{pfx}.norm2"), eps);
            let f: Vec<Vec<f64>> = linear(&h, t, &format!("{pfx}.feed_forward.linear1"), true)
                .into_iter()
                .map(|r| r.into_iter().map(gelu).collect())
                .collect();
            linear(&f, t, &format!("{pfx}.feed_forward.linear2"), true)
        };
        if d.parallel_residual {
            let f = mlp(&x);
            add(&mut x, &a);
            add(&mut x, &f);
        } else {
            add(&mut x, &a);
            let f = mlp(&x);
            add(&mut x, &f);
        }
    }
    let x = layer_norm(&x, t, "ln_f", eps);
    (linear(&x, t, "lm_head", false), maps)
}

/// Our logits and maps against transformers': |got - want| <= 1e-4 + 1e-4 |want| (f64 here, f32 there).
fn check(name: &str, logits: &[Vec<f64>], maps: &[Vec<Vec<Vec<f64>>>], exp: &serde_json::Value) {
    let want = exp["logits"].as_array().unwrap();
    assert_eq!(logits.len(), want.len());
    let mut worst = 0f64;
    for (r, w) in logits.iter().zip(want) {
        for (g, w) in r.iter().zip(w.as_array().unwrap()) {
            let w = w.as_f64().unwrap();
            assert!((g - w).abs() <= 1e-4 + 1e-4 * w.abs(), "{name}: logit {g} vs transformers {w}");
            worst = worst.max((g - w).abs());
        }
    }
    for (l, layer) in exp["attention"].as_array().unwrap().iter().enumerate() {
        for (h, head) in layer.as_array().unwrap().iter().enumerate() {
            for (i, row) in head.as_array().unwrap().iter().enumerate() {
                for (j, w) in row.as_array().unwrap().iter().enumerate() {
                    let w = w.as_f64().unwrap();
                    assert!((maps[l][h][i][j] - w).abs() <= 1e-5, "{name}: attention {l}.{h} [{i}][{j}] {} vs {w}", maps[l][h][i][j]);
                }
            }
        }
    }
    println!("{name}: logits within {worst:.1e} of transformers'");
}

fn ids(exp: &serde_json::Value) -> Vec<usize> {
    exp["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect()
}

#[test]
fn gpt2_directory_maps_onto_our_decoder_names() {
    let files = DirFiles(dir("gpt2"));
    let (plan, t) = load(&files, None);
    assert_eq!((plan.format, plan.family, plan.declared.as_str()), (Format::HfDirectory, Family::Gpt2, "GPT2LMHeadModel"));
    assert_eq!(
        (plan.dims.d_model, plan.dims.num_layers, plan.dims.num_heads, plan.dims.ffn_hidden, plan.dims.context),
        (64, 2, 4, 256, 64)
    );
    assert!(plan.dims.tied && plan.dims.qkv_bias);
    assert!(!t.contains_key("lm_head.weight"), "lm_head is tied to wte: the model uses the embedding");
    let exp = expected("gpt2");
    let (logits, maps) = gpt2_forward(&plan, &t, &ids(&exp));
    check("gpt2", &logits, &maps, &exp);
}

#[test]
fn llama_and_qwen2_directories_match_transformers_after_the_rope_permutation() {
    for name in ["llama_tied", "llama_untied_bf16", "qwen2"] {
        let files = DirFiles(dir(name));
        let (plan, t) = load(&files, None);
        let exp = expected(name);
        let (logits, maps) = llama_forward(&plan, &t, &ids(&exp));
        check(name, &logits, &maps, &exp);
        match name {
            "llama_tied" => {
                assert_eq!((plan.family, plan.dims.tied, plan.dims.rope_theta, plan.dtype), (Family::Llama, true, 10000.0, DType::F32));
                assert!(!t.contains_key("output.weight"), "tied: the model uses the embedding");
            }
            "llama_untied_bf16" => {
                assert_eq!((plan.dims.tied, plan.dims.rope_theta, plan.dtype), (false, 500000.0, DType::BF16));
                assert_ne!(t["output.weight"], t["tok_embeddings.weight"]);
                let shards: std::collections::BTreeSet<&str> = plan.tensors.iter().map(|x| x.source.file.as_str()).collect();
                assert_eq!(shards.len(), 3, "read from the three shards of the index: {shards:?}");
            }
            _ => {
                assert_eq!((plan.family, plan.dims.qkv_bias, plan.dims.rope_theta, plan.dims.norm_eps), (Family::Qwen2, true, 1e6, 1e-6));
                assert!(t.contains_key("layers.0.attention.wq.bias") && t.contains_key("layers.1.attention.wv.bias"));
            }
        }
        assert_eq!((plan.dims.num_heads, plan.dims.num_kv_heads), (4, 2), "{name}: grouped-query attention");
    }
}

#[test]
fn gpt_neox_directories_match_transformers_after_the_fused_qkv_split() {
    for name in ["pythia_parallel", "pythia_sequential"] {
        let files = DirFiles(dir(name));
        let (plan, t) = load(&files, None);
        let exp = expected(name);
        let (logits, maps) = neox_forward(&plan, &t, &ids(&exp));
        check(name, &logits, &maps, &exp);
        let d = &plan.dims;
        assert_eq!(
            (plan.family, plan.declared.as_str(), d.head_dim, d.activation),
            (Family::GptNeox, "GPTNeoXForCausalLM", 16, "gelu_erf")
        );
        if name == "pythia_parallel" {
            assert_eq!(
                (d.rotary_dims, d.rope_theta, d.parallel_residual, d.qkv_bias, d.vocab_size, plan.dtype),
                (4, 1e4, true, true, 400, DType::F16)
            );
        } else {
            assert_eq!(
                (d.rotary_dims, d.rope_theta, d.parallel_residual, d.qkv_bias, d.num_layers, plan.dtype),
                (8, 1e3, false, false, 3, DType::F32)
            );
            assert!(!t.contains_key("decoder_layers.0.self_attn.w_q.bias"));
        }
    }
}

#[test]
fn llama2c_model_bin_reads_back_to_the_same_tensors_as_the_hf_directory() {
    let files = DirFiles(dir("llama_tied"));
    let (hf_plan, hf) = load(&files, None);
    let bin_files = {
        let mut m = MemFiles::default();
        m.0.insert("model.bin".into(), std::fs::read(dir("llama_tied").join("model.bin")).unwrap());
        m
    };
    let (plan, bin) = load(&bin_files, Some("model.bin"));
    assert_eq!((plan.format, plan.family), (Format::Llama2c, Family::Llama));
    assert_eq!(plan.dims, formats::Dims { norm_eps: 1e-5, ..hf_plan.dims.clone() });
    assert_eq!(bin.len(), hf.len());
    for (name, v) in &hf {
        assert_eq!(&bin[name], v, "{name}: model.bin (Meta's pair layout) vs the HF directory after un-permuting");
    }
    let exp = expected("llama_tied");
    let (logits, maps) = llama_forward(&plan, &bin, &ids(&exp));
    check("llama2.c", &logits, &maps, &exp);
}

fn mem_copy(name: &str) -> MemFiles {
    let mut m = MemFiles::default();
    for e in std::fs::read_dir(dir(name)).unwrap() {
        let e = e.unwrap();
        m.0.insert(e.file_name().into_string().unwrap(), std::fs::read(e.path()).unwrap());
    }
    m
}

fn plan_err(files: &dyn Files, bin: Option<&str>) -> String {
    let e = formats::plan(files, bin).unwrap_err().to_string();
    assert!(!e.contains('\n'), "one line: {e}");
    e
}

/// model.safetensors with one tensor renamed in its header (the data as it was).
fn rename_tensor(m: &mut MemFiles, from: &str, to: &str) {
    let bytes = common::with_header(&m.0["model.safetensors"], |h| {
        let t = h.as_object_mut().unwrap().remove(from).unwrap();
        h[to] = t;
    });
    m.0.insert("model.safetensors".into(), bytes);
}

fn edit_config(m: &mut MemFiles, f: impl Fn(&mut serde_json::Value)) {
    let mut c: serde_json::Value = serde_json::from_slice(&m.0["config.json"]).unwrap();
    f(&mut c);
    m.0.insert("config.json".into(), serde_json::to_vec(&c).unwrap());
}

#[test]
fn bad_directories_get_one_line_errors() {
    let mut m = mem_copy("llama_tied");
    edit_config(&mut m, |c| {
        c["model_type"] = "bert".into();
        c["architectures"] = serde_json::json!(["BertForMaskedLM"]);
    });
    assert_eq!(
        plan_err(&m, None),
        "config.json: BertForMaskedLM (model_type \"bert\") is not supported: tinyformer opens gpt2, gpt_neox (Pythia), llama, mistral and qwen2 models"
    );

    let mut m = mem_copy("llama_tied");
    edit_config(&mut m, |c| {
        c.as_object_mut().unwrap().remove("hidden_size");
    });
    assert_eq!(plan_err(&m, None), "config.json: missing field \"hidden_size\"");

    let mut m = mem_copy("llama_tied");
    edit_config(&mut m, |c| c["num_key_value_heads"] = 3.into());
    assert!(plan_err(&m, None).contains("num_attention_heads 4 is not a multiple of num_key_value_heads 3"));

    let mut m = mem_copy("llama_tied");
    edit_config(&mut m, |c| c["intermediate_size"] = 96.into());
    assert!(plan_err(&m, None).contains("has shape [128, 64], but config.json implies [96, 64]"), "{}", plan_err(&m, None));

    let mut m = mem_copy("llama_tied");
    edit_config(&mut m, |c| c["rope_scaling"] = serde_json::json!({"rope_type": "llama3", "factor": 8.0}));
    assert!(plan_err(&m, None).contains("rope_scaling of type \"llama3\" is not supported"));
    // a rope_scaling that names no type, or is not an object, is refused (transformers refuses it), not ignored
    for (rs, want) in [
        (serde_json::json!({"factor": 8.0}), "rope_scaling names no \"rope_type\""),
        (serde_json::json!("llama3"), "rope_scaling must be an object"),
        (serde_json::json!({"type": 3}), "rope_type must be a string"),
    ] {
        let mut m = mem_copy("llama_tied");
        edit_config(&mut m, |c| c["rope_scaling"] = rs.clone());
        assert!(plan_err(&m, None).contains(want), "{rs}: {}", plan_err(&m, None));
    }

    // GPT-NeoX: the rotary fraction (either spelling) in (0, 1] and giving an even count of dims, heads dividing
    // the width, a hidden_act we compute
    for (edit, want) in [
        (serde_json::json!({"rotary_pct": 0.0}), "config.json: rotary_pct must be in (0, 1], got 0"),
        (serde_json::json!({"rotary_pct": 1.5}), "config.json: rotary_pct must be in (0, 1], got 1.5"),
        (
            serde_json::json!({"rotary_pct": 0.1}),
            "config.json: rotary_pct 0.1 rotates 1 of the head's 16 dimensions; RoPE needs an even number, at least 2",
        ),
        (
            serde_json::json!({"hidden_act": "relu"}),
            "config.json: hidden_act \"relu\" is not supported (gelu, gelu_new or gelu_pytorch_tanh)",
        ),
        (serde_json::json!({"num_attention_heads": 5}), "config.json: hidden_size 64 is not a multiple of num_attention_heads 5"),
        (
            serde_json::json!({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}),
            "config.json: rope_scaling of type \"linear\" is not supported",
        ),
    ] {
        let mut m = mem_copy("pythia_parallel");
        edit_config(&mut m, |c| c.as_object_mut().unwrap().extend(edit.as_object().unwrap().clone()));
        assert!(plan_err(&m, None).starts_with(want), "{edit}: {}", plan_err(&m, None));
    }
    // a GPT-NeoX head missing is named as the Hub names it (embed_out), an lm_head.weight export is read as the head
    let mut m = mem_copy("pythia_sequential");
    rename_tensor(&mut m, "embed_out.weight", "embed_outs.weight");
    assert_eq!(plan_err(&m, None), "the checkpoint has no tensor embed_out.weight (needed for lm_head.weight)");
    rename_tensor(&mut m, "embed_outs.weight", "lm_head.weight");
    assert!(formats::plan(&m, None).unwrap().tensors.iter().any(|t| t.source.foreign == "lm_head.weight" && t.name == "lm_head.weight"));
    let mut m = mem_copy("pythia_sequential");
    edit_config(&mut m, |c| c["rope_parameters"]["partial_rotary_factor"] = 2.into());
    assert_eq!(plan_err(&m, None), "config.json: rope_parameters.partial_rotary_factor must be in (0, 1], got 2");

    let mut m = mem_copy("qwen2");
    edit_config(&mut m, |c| {
        c["use_sliding_window"] = true.into();
        c["sliding_window"] = 16.into();
    });
    assert!(plan_err(&m, None).contains("sliding attention window of 16 tokens"));

    // shards: the index names a file that is not there; a shard holds a tensor the index gives elsewhere
    let mut m = mem_copy("llama_untied_bf16");
    m.0.remove("model-00002-of-00003.safetensors");
    assert!(plan_err(&m, None).contains("names model-00002-of-00003.safetensors"), "{}", plan_err(&m, None));
    let mut m = mem_copy("llama_untied_bf16");
    let mut idx: serde_json::Value = serde_json::from_slice(&m.0["model.safetensors.index.json"]).unwrap();
    let wm = idx["weight_map"].as_object_mut().unwrap();
    let (k, _) = wm.iter().find(|(_, v)| *v == "model-00001-of-00003.safetensors").map(|(k, v)| (k.clone(), v.clone())).unwrap();
    wm.insert(k.clone(), "model-00003-of-00003.safetensors".into());
    m.0.insert("model.safetensors.index.json".into(), serde_json::to_vec(&idx).unwrap());
    let e = plan_err(&m, None);
    assert!(e.contains(&k), "{e}");

    // the index: a tensor listed twice (a JSON reader keeps one silently), a million entries
    let mut m = mem_copy("llama_untied_bf16");
    let idx = String::from_utf8(m.0["model.safetensors.index.json"].clone()).unwrap();
    let dup = idx.replacen("\"weight_map\": {", "\"weight_map\": {\"lm_head.weight\": \"model-00001-of-00003.safetensors\", ", 1);
    assert_ne!(dup, idx, "the index is written as json.dump writes it");
    m.0.insert("model.safetensors.index.json".into(), dup.into_bytes());
    assert!(plan_err(&m, None).contains("weight_map lists \"lm_head.weight\" twice"), "{}", plan_err(&m, None));
    let big: serde_json::Map<String, serde_json::Value> =
        (0..1_000_000).map(|i| (format!("t{i}"), serde_json::Value::from("model-00001-of-00003.safetensors"))).collect();
    let mut m = mem_copy("llama_untied_bf16");
    m.0.insert("model.safetensors.index.json".into(), serde_json::to_vec(&serde_json::json!({"weight_map": big})).unwrap());
    assert!(plan_err(&m, None).contains("weight_map lists more than 65536 tensors"), "{}", plan_err(&m, None));

    // GPT-2: a tensor stored under two names (with and without "transformer.") is refused, not one chosen
    let mut m = mem_copy("gpt2");
    rename_tensor(&mut m, "transformer.ln_f.bias", "ln_f.weight");
    assert!(plan_err(&m, None).contains("holds ln_f.weight twice"), "{}", plan_err(&m, None));

    // a tensor name carrying a newline and a terminal escape (cargo fuzz's hf_plan found the newline in the
    // "does not describe" error): the message stays one line, the name escaped
    let mut m = mem_copy("gpt2");
    let bytes = common::with_header(&m.0["model.safetensors"], |h| {
        let end = h.as_object().unwrap().values().filter_map(|t| t["data_offsets"][1].as_u64()).max().unwrap();
        h["layers.1.att\ntion.masked_bias\u{1b}[31m"] = serde_json::json!({"dtype": "F32", "shape": [0], "data_offsets": [end, end]});
    });
    m.0.insert("model.safetensors".into(), bytes);
    let e = plan_err(&m, None);
    assert!(e.contains(r"e.g. layers.1.att\ntion.masked_bias\u{1b}[31m"), "{e}");

    // GPT-2 with tie_word_embeddings false: the stored lm_head is the model's head, never wte in its place
    let mut m = mem_copy("gpt2");
    edit_config(&mut m, |c| c["tie_word_embeddings"] = false.into());
    assert_eq!(plan_err(&m, None), "the checkpoint has no tensor lm_head.weight (needed for lm_head.weight)");
    rename_tensor(&mut m, "transformer.wte.weight", "lm_head.weight");
    assert!(plan_err(&m, None).contains("no tensor wte.weight"));

    // a truncated model.safetensors; no weights at all
    let mut m = mem_copy("gpt2");
    let b = m.0.get_mut("model.safetensors").unwrap();
    b.truncate(b.len() - 4);
    assert!(plan_err(&m, None).contains("model.safetensors: the header describes"));
    let mut m = mem_copy("gpt2");
    m.0.remove("model.safetensors");
    assert_eq!(plan_err(&m, None), "no model.safetensors and no model.safetensors.index.json beside config.json");
    assert!(plan_err(&MemFiles::default(), None).contains("no config.json"));
}

#[test]
fn bad_llama2c_files_get_one_line_errors() {
    let bin = std::fs::read(dir("llama_tied").join("model.bin")).unwrap();
    let one = |b: Vec<u8>| {
        let mut m = MemFiles::default();
        m.0.insert("model.bin".into(), b);
        plan_err(&m, Some("model.bin"))
    };
    let e = one(bin[..bin.len() - 4].to_vec());
    assert!(e.starts_with("model.bin: the header (dim 64, hidden 128, 2 layers, 4 heads, 2 KV heads, vocab 384, seq_len 64) needs"), "{e}");
    assert!(one(bin[..20].to_vec()).contains("too short"));
    let mut b = bin.clone();
    b[8..12].copy_from_slice(&(-2i32).to_le_bytes()); // n_layers < 0
    assert!(one(b).contains("n_layers = -2 is out of range"));
    let mut b = bin.clone();
    b[0..4].copy_from_slice(&i32::MAX.to_le_bytes()); // a huge dim: refused before any allocation
    assert!(one(b).contains("dim = 2147483647 is out of range"));
    let mut b = bin;
    b[20..24].copy_from_slice(&(-384i32).to_le_bytes()); // claims an unshared classifier: the size disagrees
    assert!(one(b).contains("unshared classifier"));
}

/// A llama2.c model.bin consistent with the size it claims, read through a reader that returns
/// its header and then zeros (nothing that size is written to disk), recording the longest read.
struct ZeroBin {
    header: Vec<u8>,
    size: u64,
    longest: std::cell::Cell<u64>,
}

impl ZeroBin {
    /// dim, hidden_dim, n_layers, n_heads (= n_kv_heads), vocab_size (shared classifier), seq_len
    fn new(d: u64, ff: u64, l: u64, nh: u64, v: u64, s: u64) -> ZeroBin {
        let header = [d, ff, l, nh, nh, v, s].iter().flat_map(|&x| (x as i32).to_le_bytes()).collect();
        let floats = v * d + l * (2 * d + 4 * d * d + 3 * ff * d) + d + s * (d / nh);
        ZeroBin { header, size: 28 + 4 * floats, longest: Default::default() }
    }
}

impl Files for ZeroBin {
    fn size(&self, name: &str) -> Option<u64> {
        (name == "model.bin").then_some(self.size)
    }
    fn read_range(&self, _: &str, start: u64, len: u64) -> Result<Vec<u8>, formats::FormatError> {
        self.longest.set(self.longest.get().max(len));
        let mut out = vec![0u8; len as usize];
        for (i, b) in out.iter_mut().enumerate().take(28usize.saturating_sub(start as usize)) {
            *b = self.header[start as usize + i];
        }
        Ok(out)
    }
}

#[test]
fn a_large_llama2c_embedding_is_checked_before_it_is_read_and_read_in_pieces() {
    use tinyformer::model::memory::{self, Budget};
    let open = |f: &ZeroBin, budget: u64| formats::open(f, Some("model.bin"), |cfg| memory::demand(cfg).check(&Budget::cli(budget)));
    // a 2 GiB embedding (vocab 524,288 x dim 1024) under a 1 GiB budget: refused in one line after
    // reading the 28-byte header only
    let big = ZeroBin::new(1024, 64, 1, 8, 524_288, 16);
    let e = open(&big, 1 << 30).err().expect("over the budget").to_string();
    assert!(e.contains("budget") && !e.contains('\n'), "{e}");
    assert_eq!(big.longest.get(), 28);
    // a 4 TiB embedding (2^20 x 2^20) under a budget of 2^60 bytes: over the parameter limit, also
    // in one line after the header only
    let huge = ZeroBin::new(1 << 20, 64, 1, 1024, 1 << 20, 16);
    let e = open(&huge, 1 << 60).err().expect("over the limits").to_string();
    assert!(e.contains("parameters, over the limit") && !e.contains('\n'), "{e}");
    assert_eq!(huge.longest.get(), 28);
    // within the budget (a 64 MiB embedding): read and widened piece by piece into the one f32
    // copy, never the whole tensor's bytes beside it
    let mid = ZeroBin::new(256, 64, 1, 4, 65_536, 16);
    let o = open(&mid, 64 << 30).unwrap();
    assert!(mid.longest.get() <= formats::READ_PIECE, "{}", mid.longest.get());
    let emb = o.checkpoint.tensor("tok_embeddings.weight").unwrap();
    assert_eq!(emb.data.len(), 65_536 * 256);
    assert!(emb.data.iter().all(|&x| x == 0.0));
}

#[test]
fn an_allocation_the_system_cannot_give_is_a_one_line_error() {
    // more than the address space: refused by try_reserve_exact on every platform, never an abort
    let e = formats::try_with_capacity::<f32>(1 << 62, "model.bin: tensor token_embedding_table").unwrap_err().to_string();
    assert_eq!(e, "out of memory: model.bin: tensor token_embedding_table needs 18446744073709551615 bytes and the allocation failed");
}
