//! The run state is sized to what is asked for: attention maps only for the
//! layers requested and the current length, the K/V caches for the context in use (prompt + new
//! tokens), growing when a run needs more and refused over the budget; the budget from a device's
//! limits on one buffer; and the GPU reads back only the requested layers' rows per token.

mod common;
use common::{read, with_config};
use tinyformer::model::backend::Backend;
use tinyformer::model::config::Arch;
use tinyformer::model::memory::{self, Budget, DeviceLimits, WeightCopies};
use tinyformer::model::run::{AttnMap, GenConfig};
use tinyformer::model::state::{MapLayers, Plan, LOAD_CONTEXT};
use tinyformer::model::{CpuBackend, GpuBackend, Model};

const MODELS: &str = "tests/fixtures/models";

/// decoder_a (2 layers, 2 heads, d_model 24) with a context of 65536: its whole-context maps
/// alone are 2 x 2 x 65536^2 x 4 bytes = 64 GiB.
fn long_decoder() -> Vec<u8> {
    with_config(&read(&format!("{MODELS}/decoder_a.safetensors")), |c| c["max_seq_len"] = 65536.into())
}

fn item(d: &memory::Demand, what: &str) -> u64 {
    d.items.iter().find(|i| i.what == what).map_or(0, |i| i.bytes)
}

/// The demand of the state's plan equals what was allocated; returns (maps, scratch) bytes.
fn demand_matches<B: Backend>(m: &Model<B>, copies: WeightCopies, why: &str) -> (u64, u64) {
    let d = memory::demand_for(&m.cfg, copies, &m.state.plan);
    assert_eq!(d.run_state_bytes(), m.state.bytes, "{why}: demand vs allocation, {:?}", m.state.plan);
    (item(&d, "attention maps"), item(&d, "attention scratch"))
}

#[test]
fn a_long_context_allocates_maps_for_the_layers_asked_and_the_current_length() {
    let b = &mut CpuBackend;
    let bytes = long_decoder();
    let mut m = Model::load(b, &bytes).unwrap();
    let (nh, s) = (m.cfg.num_heads as u64, 65536u64);
    // the whole context with every map is far over the default budget: refused if asked for
    let full = memory::demand(&m.cfg);
    assert_eq!(item(&full, "attention maps"), 2 * nh * s * s * 4);
    assert!(full.check(&Budget::default()).is_err());
    // at load: LOAD_CONTEXT rows, no maps, a scratch for one-row passes
    assert_eq!(m.state.plan, Plan::new(&m.cfg, LOAD_CONTEXT, MapLayers::None, LOAD_CONTEXT));
    let (maps, scratch) = demand_matches(&m, WeightCopies::None, "load");
    assert_eq!((maps, scratch), (0, nh * LOAD_CONTEXT as u64 * 4));
    assert!(m.state.maps.decoder.iter().all(Option::is_none));

    let ids: Vec<u32> = (0..300).map(|i| 3 + (i * 7 % 40) as u32).collect();
    let t = ids.len() as u64;
    let all = pollster::block_on(m.forward(b, &ids, None)).unwrap();
    let (maps, scratch) = demand_matches(&m, WeightCopies::None, "all layers");
    assert_eq!((maps, scratch), (2 * nh * t * t * 4, 0), "every layer's (NH, T, T), no scratch");
    assert_eq!(m.state.plan.context, 300, "the state grew to the pass");
    assert_eq!(all.attention.len(), 2);

    for (maps_asked, kept) in [(MapLayers::only([1]), 1u64), (MapLayers::None, 0)] {
        let out = pollster::block_on(m.forward_with(b, &ids, None, &maps_asked)).unwrap();
        let (maps, scratch) = demand_matches(&m, WeightCopies::None, &format!("{maps_asked:?}"));
        assert_eq!(maps, kept * nh * t * t * 4, "{maps_asked:?}");
        assert_eq!(scratch, nh * t * t * 4, "{maps_asked:?}: one shared scratch for the other layer");
        assert_eq!(out.attention.len() as u64, kept, "{maps_asked:?}");
        assert_eq!(m.state.maps.decoder.iter().filter(|x| x.is_some()).count() as u64, kept);
        // the maps returned are the full computation's, and so are the logits
        for a in &out.attention {
            let full = all.attention.iter().find(|f| f.kind == a.kind && f.layer == a.layer).unwrap();
            assert_eq!((a.rows, a.cols, a.heads), (full.rows, full.cols, full.heads));
            assert_eq!(a.data, full.data, "layer {}", a.layer);
        }
        assert_eq!(out.logits, all.logits, "{maps_asked:?}");
    }
    // a layer the model does not have is named
    let e = pollster::block_on(m.forward_with(b, &ids, None, &MapLayers::only([2]))).err().unwrap();
    assert_eq!(e.to_string(), "attention maps of layer 2 were asked for, but the model has 2 layers (0 to 1)");
}

#[test]
fn every_architecture_gives_the_requested_maps_equal_to_the_full_ones() {
    let b = &mut CpuBackend;
    for name in ["encdec_a", "llama_gqa", "moe_a"] {
        let mut m = Model::load(b, &read(&format!("{MODELS}/{name}.safetensors"))).unwrap();
        let ids = [1u32, 5, 9, 4, 7, 3];
        let tgt = (m.cfg.arch == Arch::EncoderDecoder).then_some(&[1u32, 6, 8][..]);
        let all = pollster::block_on(m.forward(b, &ids, tgt)).unwrap();
        let one = pollster::block_on(m.forward_with(b, &ids, tgt, &MapLayers::only([0]))).unwrap();
        demand_matches(&m, WeightCopies::None, name);
        let kinds = if m.cfg.arch == Arch::EncoderDecoder { 3 } else { 1 };
        assert_eq!(one.attention.len(), kinds, "{name}: layer 0 of each kind");
        for a in &one.attention {
            assert_eq!(a.layer, 0);
            let f = all.attention.iter().find(|f| f.kind == a.kind && f.layer == 0).unwrap();
            assert_eq!(a.data, f.data, "{name} {}", a.kind);
        }
        assert_eq!(one.logits, all.logits, "{name}");
    }
}

#[test]
fn the_kv_cache_is_sized_to_the_context_in_use_and_grows_or_is_refused() {
    let b = &mut CpuBackend;
    let bytes = long_decoder();
    let mut m = Model::load(b, &bytes).unwrap();
    let kvw = m.cfg.num_kv_heads * m.cfg.head_dim();
    let prompt = [3u32, 9, 4];
    let want = pollster::block_on(m.generate(b, &prompt, None, GenConfig { max_new_tokens: 12, ..GenConfig::default() })).unwrap();
    // K/V for the prompt plus the new tokens, not for the 65536 of the model's context
    assert_eq!(m.state.plan.context, 15);
    assert_eq!(m.state.layers[0].k.len(), 15 * kvw);
    demand_matches(&m, WeightCopies::None, "generation");

    // a generation planned for 2 new tokens, then asked for 12: the state grows past its 5 rows
    // (re-reading the sequence from position 0 once) and the tokens are the same
    let mut g = m.start_generation(b, &prompt, None, GenConfig { max_new_tokens: 2, ..GenConfig::default() }).unwrap();
    assert_eq!(m.state.plan.context, 5);
    assert_eq!(m.state.layers[1].v.len(), 5 * kvw);
    g.cfg.max_new_tokens = 12;
    while pollster::block_on(m.next_token(b, &mut g)).unwrap().is_some() {}
    assert_eq!(g.ids, want);
    assert_eq!(m.state.plan.context, 20, "doubled once: 5 -> 10 -> 20 covers 15");
    demand_matches(&m, WeightCopies::None, "grown");

    // a context over the budget is refused in one line naming it, before anything is allocated
    let at_load = memory::demand_for(&m.cfg, WeightCopies::None, &Plan::at_load(&m.cfg)).total_bytes;
    let budget = Budget::cli(at_load + 4096);
    let mut m = Model::load_within(b, &bytes, &budget).unwrap();
    let before = m.state.bytes;
    let cfg = GenConfig { max_new_tokens: 60000, ..GenConfig::default() };
    let e = m.start_generation(b, &prompt, None, cfg).err().expect("over budget");
    let msg = e.to_string();
    println!("{msg}");
    assert!(msg.starts_with("a context of 60003 tokens with no attention maps: the model needs "), "{msg}");
    assert!(msg.contains("over the memory budget of"), "{msg}");
    assert!(msg.contains("biggest buffers: activations ") && msg.contains("KV cache 22.0 MiB (4 x (S 60003, NKV*HS 24))"), "{msg}");
    assert!(!msg.contains('\n'));
    assert_eq!(m.state.bytes, before);
    // and one that fits runs
    let ids = pollster::block_on(m.generate(b, &prompt, None, GenConfig { max_new_tokens: 12, ..GenConfig::default() })).unwrap();
    assert_eq!(ids, want);
}

#[test]
fn a_budget_from_device_limits_refuses_one_buffer_over_the_binding_size() {
    let bytes = read(&format!("{MODELS}/decoder_a.safetensors"));
    // decoder_a's largest buffer is one of (S 32, d_ff 48) values: 6144 bytes (its activations)
    let limits = DeviceLimits { max_buffer_size: 1 << 30, max_storage_buffer_binding_size: 4000 };
    let budget = Budget::page_for(Some(limits), None);
    let e = Model::load_within(&CpuBackend, &bytes, &budget).err().expect("over the binding size");
    let msg = e.to_string();
    println!("{msg}");
    assert!(msg.starts_with("the model needs one activations buffer of 6.0 KiB (6144 bytes; (S 32, H 48)), "), "{msg}");
    assert!(msg.contains("over this GPU's maxStorageBufferBindingSize of 3.9 KiB (4000 bytes); in all it needs "), "{msg}");
    assert!(msg.contains("biggest buffers: weights "), "{msg}");
    assert!(!msg.contains('\n') && msg.len() < 500, "{msg}");
    // maxBufferSize too
    let limits = DeviceLimits { max_buffer_size: 4000, max_storage_buffer_binding_size: 1 << 30 };
    let msg = Model::load_within(&CpuBackend, &bytes, &Budget::page_for(Some(limits), None)).err().unwrap().to_string();
    assert!(msg.contains("over this GPU's maxBufferSize of 3.9 KiB (4000 bytes)"), "{msg}");
    // a binding size that holds it loads
    let limits = DeviceLimits { max_buffer_size: 1 << 30, max_storage_buffer_binding_size: 6144 };
    assert!(Model::load_within(&CpuBackend, &bytes, &Budget::page_for(Some(limits), None)).is_ok());
    // the page's total: 2 GiB, or half of navigator.deviceMemory when that is less
    assert_eq!(Budget::page().bytes, 2 << 30);
    assert_eq!(Budget::page_for(None, Some(8.0)).bytes, 2 << 30);
    let small = Budget::page_for(None, Some(0.5));
    assert_eq!(small.bytes, 256 << 20);
    assert_eq!(small.how_to_raise, "half of this machine's memory (navigator.deviceMemory)");
    assert_eq!(small.max_binding, u64::MAX, "the CPU path has no binding limit");
}

/// Bytes one generated token reads back on the GPU, and its attention rows.
fn step_reads(gb: &mut GpuBackend, m: &mut Model<GpuBackend>, cfg: GenConfig) -> Vec<(u64, Vec<AttnMap>)> {
    let mut g = m.start_generation(gb, &[3, 9, 4, 7], None, cfg).unwrap();
    let mut out = vec![];
    loop {
        let before = gb.bytes_read;
        let Some(step) = pollster::block_on(m.next_token(gb, &mut g)).unwrap() else { break };
        out.push((gb.bytes_read - before, step.attention));
    }
    out
}

#[test]
fn a_gpu_token_reads_back_only_the_requested_layers_rows() {
    let gpu = std::sync::Arc::new(pollster::block_on(tinyformer::gpu::Gpu::new()).expect("a GPU adapter (Mesa llvmpipe in CI)"));
    let bytes = read(&format!("{MODELS}/llama_gqa.safetensors"));
    let mut gb = GpuBackend::new(gpu.clone());
    let mut m = Model::load(&gb, &bytes).unwrap();
    let (nh, layers) = (m.cfg.num_heads as u64, m.cfg.num_layers as u64);
    let base = GenConfig { max_new_tokens: 5, attention: true, ..GenConfig::default() };
    let all = step_reads(&mut gb, &mut m, base.clone());
    let one = step_reads(&mut gb, &mut m, GenConfig { map_layers: MapLayers::only([1]), ..base.clone() });
    let none = step_reads(&mut gb, &mut m, GenConfig { attention: false, ..base.clone() });
    assert_eq!(all.len(), 5);
    for (i, ((a, am), (o, om))) in all.iter().zip(&one).enumerate() {
        // the 8-byte (id, NaN count) read plus (NH, T, pos + T) rows per layer read
        let (t, keys) = if i == 0 { (4u64, 4u64) } else { (1, 4 + i as u64) };
        let rows = nh * t * keys * 4;
        println!("token {i}: all layers {a} bytes, layer 1 {o} bytes, no maps {} bytes", none[i].0);
        assert_eq!(*a, 8 + layers * rows, "token {i}");
        assert_eq!(*o, 8 + rows, "token {i}: layer 1's rows only");
        assert_eq!(none[i].0, 8, "token {i}");
        assert_eq!(om.len(), 1);
        assert_eq!(om[0].layer, 1);
        let full = am.iter().find(|x| x.layer == 1).unwrap();
        assert_eq!(om[0].data, full.data, "token {i}: the same values as the full readback");
    }
    // the plan's demand matches the allocation on the GPU too
    let d = memory::demand_for(&m.cfg, WeightCopies::None, &m.state.plan);
    assert_eq!(d.run_state_bytes(), m.state.bytes);
}
