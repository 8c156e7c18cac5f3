//! Bounded work for any checkpoint: the memory a config asks for is computed before
//! anything is allocated and checked against a budget; eval with a 1-token context is refused;
//! non-finite logits are an error, not token 0; GPU memory stays flat over load/unload cycles.

mod common;
use common::{read, with_config};
use tinyformer::model::memory::{self, Budget, WeightCopies};
use tinyformer::model::run::GenConfig;
use tinyformer::model::state::MapLayers;
use tinyformer::model::{CpuBackend, Model};

const MODELS: &str = "tests/fixtures/models";
const MALFORMED: &str = "tests/fixtures/malformed";

#[test]
fn memory_demand_is_what_the_model_allocates_for_every_architecture() {
    let b = CpuBackend;
    for name in ["decoder_a", "encdec_a", "llama_gqa", "moe_a"] {
        let mut m = Model::load(&b, &read(&format!("{MODELS}/{name}.safetensors"))).unwrap();
        // at load, after a forward with every map, with layer 1's only, and with none
        let plans = [None, Some(MapLayers::All), Some(MapLayers::only([1])), Some(MapLayers::None)];
        for maps in plans {
            if let Some(maps) = &maps {
                let src = (m.cfg.arch == tinyformer::model::config::Arch::EncoderDecoder).then_some(5);
                m.plan_pass(&b, src, 7, maps).unwrap();
            }
            let d = memory::demand_for(&m.cfg, WeightCopies::None, &m.state.plan);
            // what RunState::new allocated, and the values of the tensors the checkpoint held
            let (state, weights) = (m.state.bytes, m.params * 4);
            println!(
                "{name} {:?}: demand {} bytes = weights {weights} + run state {state}; {:?}",
                m.state.plan,
                d.total_bytes,
                d.largest(3)
            );
            assert_eq!(d.run_state_bytes(), state, "{name} {maps:?}: run state");
            assert_eq!(d.total_bytes - d.run_state_bytes(), weights, "{name}: weights");
            assert_eq!(d.total_bytes, weights + state, "{name}");
        }
        // the full plan is the most a model can ask for
        assert!(memory::demand(&m.cfg).total_bytes >= m.state.bytes + m.params * 4);
    }
}

#[test]
fn only_the_encoder_decoder_allocates_masks_and_only_llama_the_swiglu_buffer() {
    let b = CpuBackend;
    for (name, masks, h2) in [("decoder_a", false, false), ("moe_a", false, false), ("llama_gqa", false, true), ("encdec_a", true, false)] {
        let m = Model::load(&b, &read(&format!("{MODELS}/{name}.safetensors"))).unwrap();
        assert_eq!(m.state.dec.mask.is_some(), masks, "{name}: decoder self mask");
        assert_eq!(m.state.dec.cross_mask.is_some(), masks, "{name}: cross mask");
        assert_eq!(m.state.dec.h2.is_some(), h2, "{name}: SwiGLU up projection");
        if let Some(enc) = &m.state.enc {
            assert!(enc.mask.is_some() && enc.cross_mask.is_none(), "{name}: the encoder has a padding mask and no cross mask");
        }
    }
}

#[test]
fn a_tiny_file_with_a_huge_context_is_refused_before_allocating() {
    // 1 layer, d_model 8, 8 heads, context 65536: a few KB of weights, 128 GiB of attention maps.
    let bytes = with_config(&read(&format!("{MALFORMED}/valid_decoder.safetensors")), |c| {
        c["max_seq_len"] = 65536.into();
        c["num_heads"] = 8.into();
    });
    // the load allocates a small context without maps; a pass over the whole context asks for its
    // maps, and is refused before anything is allocated
    let b = &mut CpuBackend;
    let mut m = Model::load(b, &bytes).unwrap();
    let before = m.state.plan.clone();
    let ids = vec![1u32; 65536];
    let e = pollster::block_on(m.forward(b, &ids, None)).err().expect("over budget");
    let msg = e.to_string();
    println!("{msg}");
    assert!(
        msg.starts_with(
            "a context of 65536 tokens with every layer's attention maps: the model needs 128.0 GiB of memory (137463073904 bytes)"
        ),
        "{msg}"
    );
    assert!(msg.contains("over the memory budget of 4.0 GiB (the default budget)"), "{msg}");
    assert!(msg.contains("biggest buffers: attention maps 128.0 GiB (1 x (NH 8, S 65536, S 65536))"), "{msg}");
    assert!(!msg.contains('\n') && msg.len() < 400, "{msg}");
    assert_eq!(m.state.plan, before, "nothing was reallocated");
    // the whole-context demand says the same before any load
    let msg = memory::demand(&m.cfg).check(&Budget::default()).unwrap_err();
    assert!(msg.starts_with("the model needs 128.0 GiB of memory (137463073904 bytes)"), "{msg}");
    // a budget that holds it lets the check pass (the load is not attempted here: 130 GiB)
    let cfg = tinyformer::model::checkpoint::Checkpoint::from_bytes(&bytes).unwrap().config;
    assert!(memory::demand(&cfg).check(&Budget::cli(200 << 30)).is_ok());
    // and a budget below a shipped fixture refuses it, naming the budget's source
    let small = Model::load_within(&CpuBackend, &read(&format!("{MODELS}/decoder_a.safetensors")), &Budget::cli(1000));
    let msg = small.err().expect("1000 bytes is too small").to_string();
    assert!(msg.contains("over the memory budget of 1000 B (raise it with --memory-budget)"), "{msg}");
}

#[test]
fn eval_with_a_one_token_context_is_refused() {
    let bytes = with_config(&read(&format!("{MALFORMED}/valid_decoder.safetensors")), |c| c["max_seq_len"] = 1.into());
    let b = &mut CpuBackend;
    let mut m = Model::load(b, &bytes).unwrap();
    let e = pollster::block_on(m.eval_loss(b, &[1, 2, 3, 4])).unwrap_err();
    assert_eq!(e.to_string(), "eval needs a context of at least 2 tokens; this model's context is 1");
    // a 2-token context advances one target per window
    let bytes = with_config(&read(&format!("{MALFORMED}/valid_decoder.safetensors")), |c| c["max_seq_len"] = 2.into());
    let mut m = Model::load(b, &bytes).unwrap();
    let (loss, n) = pollster::block_on(m.eval_loss(b, &[1, 2, 3, 4, 5])).unwrap();
    assert_eq!(n, 4);
    assert!(loss.is_finite() && loss > 0.0, "{loss}");
    // generation from a full context produces nothing and stops
    let ids = pollster::block_on(m.generate(b, &[1, 2], None, GenConfig { max_new_tokens: 5, ..GenConfig::default() })).unwrap();
    assert_eq!(ids, vec![1, 2]);
}

#[test]
fn non_finite_logits_are_an_error_naming_where_they_appear() {
    let gpu = std::sync::Arc::new(pollster::block_on(tinyformer::gpu::Gpu::new()).expect("a GPU adapter (Mesa llvmpipe in CI)"));
    let cases = [
        ("valid_overflow_head", "the attention keys of all 1 layers are finite, so they appear after the last layer's attention"),
        ("valid_overflow_layer", "they first appear in the attention keys of layer 0 (of 1)"),
    ];
    for (name, place) in cases {
        let bytes = read(&format!("{MALFORMED}/{name}.safetensors"));
        let want = format!("the model produced non-finite values (NaN or Inf) instead of logits: {place}");
        // CPU: greedy generation (sampled on the backend), forward and eval
        let cb = &mut CpuBackend;
        let mut m = Model::load(cb, &bytes).unwrap();
        let e = pollster::block_on(m.generate(cb, &[1, 2, 3], None, GenConfig { max_new_tokens: 2, ..GenConfig::default() })).unwrap_err();
        assert!(e.to_string().starts_with(&want), "{name} cpu generate: {e}");
        let e = pollster::block_on(m.forward(cb, &[1, 2, 3], None)).err().expect("forward refuses");
        assert!(e.to_string().starts_with(&want), "{name} cpu forward: {e}");
        let e = pollster::block_on(m.eval_loss(cb, &[1, 2, 3])).unwrap_err();
        assert!(e.to_string().starts_with(&want), "{name} cpu eval: {e}");
        // logits read back and sampled on the host
        let cfg = GenConfig { max_new_tokens: 2, gpu_sampling: false, ..GenConfig::default() };
        let e = pollster::block_on(m.generate(cb, &[1, 2, 3], None, cfg)).unwrap_err();
        assert!(e.to_string().starts_with(&want), "{name} cpu readback: {e}");
        // GPU: the sampler counts the non-finite logits in the same 8-byte readback as the id,
        // with and without sampling parameters, cached and not
        let mut gb = tinyformer::model::GpuBackend::new(gpu.clone());
        let mut m = Model::load(&gb, &bytes).unwrap();
        for cfg in [
            GenConfig { max_new_tokens: 2, ..GenConfig::default() },
            GenConfig {
                max_new_tokens: 2,
                sample: tinyformer::ops::SampleParams { temperature: 0.8, top_k: 5, top_p: 0.9 },
                kv_cache: false,
                attention: true,
                ..GenConfig::default()
            },
        ] {
            let e = pollster::block_on(m.generate(&mut gb, &[1, 2, 3], None, cfg)).unwrap_err();
            assert!(e.to_string().starts_with(&want), "{name} gpu generate: {e}");
        }
    }
    // a finite model is not affected: its greedy continuation is the PyTorch one
    let fx: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(format!("{MODELS}/decoder_a.json")).unwrap()).unwrap();
    let ids = |v: &serde_json::Value| v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect::<Vec<u32>>();
    let mut gb = tinyformer::model::GpuBackend::new(gpu.clone());
    let mut m = Model::load(&gb, &read(&format!("{MODELS}/decoder_a.safetensors"))).unwrap();
    let n = fx["greedy"]["max_new_tokens"].as_u64().unwrap() as usize;
    let got = pollster::block_on(m.generate(
        &mut gb,
        &ids(&fx["greedy"]["prompt_ids"]),
        None,
        GenConfig { max_new_tokens: n, ..GenConfig::default() },
    ))
    .unwrap();
    assert_eq!(got, ids(&fx["greedy"]["ids"]));
}

/// NaN/Inf weights (the embeddings of ids 0, 1 and 2 of valid_nan_weights) load on every backend,
/// and logits computed from them are one line naming the position and the tensor, from generate
/// (sampled on the backend or read back: the last row, position 2), forward and eval.
#[test]
fn nan_weights_load_and_their_logits_are_a_one_line_error() {
    let gpu = std::sync::Arc::new(pollster::block_on(tinyformer::gpu::Gpu::new()).expect("a GPU adapter (Mesa llvmpipe in CI)"));
    let bytes = read(&format!("{MALFORMED}/valid_nan_weights.safetensors"));
    let want = |pos: usize| {
        format!(
            "the model's logits at position {pos} are not finite (NaN or Inf): its weights hold NaN or infinite values \
             (tensor \"token_embedding.weight\" holds 2 NaN and 1 Inf of 88 values)"
        )
    };
    fn check<B: tinyformer::model::Backend>(b: &mut B, bytes: &[u8], name: &str, want: &dyn Fn(usize) -> String) {
        let mut m = Model::load(b, bytes).unwrap_or_else(|e| panic!("{name}: NaN weights load: {e}"));
        // ids 4 and 5 are finite: their logits are fine, id 1 is not (position 2)
        let out = pollster::block_on(m.forward(b, &[4, 5], None)).unwrap_or_else(|e| panic!("{name}: finite rows: {e}"));
        assert!(out.logits.iter().all(|x| x.is_finite()), "{name}");
        // a full pass names the first non-finite row; masked attention can carry the NaN of position
        // 2 to earlier rows (0 x NaN, as in PyTorch), so the position is any of 0..=2
        let e = pollster::block_on(m.forward(b, &[4, 5, 1, 6], None)).err().expect("forward refuses").to_string();
        assert!((0..=2).any(|p| e == want(p)), "{name} forward: {e}");
        let e = pollster::block_on(m.eval_loss(b, &[4, 5, 1, 6])).unwrap_err().to_string();
        assert!((0..=2).any(|p| e == want(p)), "{name} eval: {e}");
        for cfg in [
            GenConfig { max_new_tokens: 2, ..GenConfig::default() },
            GenConfig { max_new_tokens: 2, gpu_sampling: false, ..GenConfig::default() },
            GenConfig {
                max_new_tokens: 2,
                sample: tinyformer::ops::SampleParams { temperature: 0.8, top_k: 5, top_p: 0.9 },
                kv_cache: false,
                ..GenConfig::default()
            },
            GenConfig { max_new_tokens: 2, top: 3, ..GenConfig::default() },
        ] {
            let e = pollster::block_on(m.generate(b, &[4, 5, 1], None, cfg)).unwrap_err().to_string();
            assert_eq!(e, want(2), "{name} generate");
        }
    }
    check(&mut CpuBackend, &bytes, "cpu", &want);
    check(&mut tinyformer::fastcpu::FastCpuBackend::default(), &bytes, "fastcpu", &want);
    check(&mut tinyformer::model::GpuBackend::new(gpu), &bytes, "gpu", &want);
}

#[test]
fn gpu_memory_is_flat_over_twenty_load_unload_cycles() {
    let gpu = std::sync::Arc::new(pollster::block_on(tinyformer::gpu::Gpu::new()).expect("a GPU adapter (Mesa llvmpipe in CI)"));
    let bytes = read(&format!("{MODELS}/llama_gqa.safetensors"));
    let report = || gpu.device.generate_allocator_report().map(|r| (r.total_allocated_bytes, r.total_reserved_bytes));
    let base = gpu.live_buffers();
    let mut seen = Vec::new();
    for cycle in 0..20 {
        // as the page does: a backend per load, a generation, then free
        let mut b = tinyformer::model::GpuBackend::new(gpu.clone());
        let mut m = Model::load(&b, &bytes).unwrap();
        let loaded = gpu.live_buffers();
        let rep_loaded = report();
        let ids =
            pollster::block_on(m.generate(&mut b, &[1, 2, 3], None, GenConfig { max_new_tokens: 3, ..GenConfig::default() })).unwrap();
        assert_eq!(ids.len(), 6);
        let state = memory::demand_for(&m.cfg, WeightCopies::None, &m.state.plan).total_bytes;
        assert!(loaded.1 >= state, "cycle {cycle}: {loaded:?} live, the model needs {state} bytes");
        drop(m);
        drop(b);
        gpu.poll_wait();
        let after = gpu.live_buffers();
        let rep = report();
        println!("cycle {cycle}: loaded {loaded:?} (buffers, bytes), after free {after:?}, allocator (allocated, reserved) {rep:?}");
        assert_eq!(after, base, "cycle {cycle}: buffers left alive after free");
        if let (Some(l), Some(r)) = (rep_loaded, rep) {
            // the report sees the model: it shrinks when the model is freed
            assert!(l.0 > r.0, "cycle {cycle}: allocated {} bytes loaded, {} after free", l.0, r.0);
        }
        seen.push((loaded, rep));
    }
    // every cycle loads the same buffers, and the allocator's figures after a free do not grow
    assert!(seen.iter().all(|s| s.0 == seen[0].0), "{seen:?}");
    let reports: Vec<(u64, u64)> = seen.iter().filter_map(|s| s.1).collect();
    assert!(!reports.is_empty() || gpu.summary.backend != "Vulkan", "wgpu gives an allocator report on Vulkan");
    if let Some(first) = reports.first() {
        assert!(reports.iter().all(|r| r.0 <= first.0 && r.1 <= first.1), "allocator figures grow: {reports:?}");
    }
}
