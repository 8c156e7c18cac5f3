//! The architecture declaration (`Weights::declare`) is the one source of tensor names and shapes:
//! for every checkpoint we have (tests/fixtures/models and the shipped models/), what the file
//! holds, what the checkpoint keeps, what the loader takes and what the counts say all equal
//! the declaration. And a checkpoint in another layout (renamed tensors, Conv1D-style transposed
//! weights) loads through the `Layout` hook into the same tensors.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use tinyformer::error::Result;
use tinyformer::model::checkpoint::{Checkpoint, Layout};
use tinyformer::model::memory::{self, WeightCopies};
use tinyformer::model::weights::{Census, Listing, Role, Sink, VarBuilder, Weights};
use tinyformer::model::{CpuBackend, Model};

fn checkpoints() -> Vec<String> {
    let mut out = Vec::new();
    for dir in ["tests/fixtures/models", "models"] {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "safetensors") {
                out.push(p.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    assert!(out.len() >= 14, "{out:?}");
    out
}

/// Name -> shape of every tensor in the file, read by the safetensors crate alone.
fn file_tensors(bytes: &[u8]) -> BTreeMap<String, Vec<usize>> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
    meta.tensors().into_iter().map(|(n, i)| (n, i.shape.clone())).collect()
}

/// A sink that does what the loader's does (takes each declared tensor out of the checkpoint)
/// and records the name and the shape of what it took.
struct Recorder<'a> {
    ck: &'a mut Checkpoint,
    took: Vec<(String, Vec<usize>)>,
}

impl Sink for Recorder<'_> {
    type T = ();
    fn take(&mut self, name: &str, _shape: &[usize], _role: Role) -> Result<()> {
        let t = self.ck.take(name).unwrap_or_else(|| panic!("the declaration asks for {name}, which the checkpoint does not hold"));
        self.took.push((name.to_string(), t.shape));
        Ok(())
    }
}

#[test]
fn what_the_loader_reads_is_what_is_declared_for_every_checkpoint() {
    for path in checkpoints() {
        let bytes = std::fs::read(&path).unwrap();
        let ck = Checkpoint::from_bytes(&bytes).unwrap_or_else(|e| panic!("{path}: {e}"));
        let cfg = ck.config.clone();
        let declared: Vec<(String, Vec<usize>)> = Listing::of(&cfg).into_iter().map(|d| (d.name, d.shape)).collect();
        assert_eq!(declared, cfg.expected_tensors(), "{path}");

        // the file's tensors, but for the registered sinusoidal table the model recomputes
        let in_file: BTreeMap<String, Vec<usize>> =
            file_tensors(&bytes).into_iter().filter(|(n, _)| !n.ends_with("pos_encoding.pe")).collect();
        let declared_map: BTreeMap<String, Vec<usize>> = declared.iter().cloned().collect();
        assert_eq!(declared_map.len(), declared.len(), "{path}: a name is declared twice");
        assert_eq!(in_file, declared_map, "{path}: the file's tensors vs the declaration");

        // the checkpoint keeps exactly the declared tensors
        let kept: BTreeMap<String, Vec<usize>> = ck.tensors.iter().map(|(n, t)| (n.clone(), t.shape.clone())).collect();
        assert_eq!(kept, declared_map, "{path}: kept tensors");

        // the loader's walk takes them all, in declaration order, with the declared shapes
        let mut ck2 = ck.clone();
        let mut rec = Recorder { ck: &mut ck2, took: vec![] };
        Weights::declare(&cfg, &mut VarBuilder::new(&mut rec)).unwrap();
        assert_eq!(rec.took, declared, "{path}: taken by the walk");
        assert!(ck2.tensors.is_empty(), "{path}: left over after the walk: {:?}", ck2.tensors.keys().collect::<Vec<_>>());

        // counts
        let census = Census::of(&cfg);
        assert_eq!(census.tensors, declared.len() as u64, "{path}");
        let values: u64 = declared.iter().map(|(_, s)| s.iter().product::<usize>() as u64).sum();
        assert_eq!((census.params, cfg.param_count(), ck.param_count()), (values, values, values), "{path}");

        // and the real loader on a backend uses up the checkpoint
        let mut ck3 = ck.clone();
        Weights::load(&CpuBackend, &cfg, &mut ck3).unwrap();
        assert!(ck3.tensors.is_empty(), "{path}");
        println!("{path}: {} tensors, {} parameters, as declared", declared.len(), values);
    }
}

/// A toy of the foreign layouts: the file calls the decoder's blocks `h.{i}`, the embedding
/// `wte` and the head `unembed`, and stores the attention projections transposed (in, out), as
/// GPT-2's Conv1D does.
struct Toy;

impl Layout for Toy {
    fn file_name<'a>(&self, declared: &'a str) -> Cow<'a, str> {
        if let Some(rest) = declared.strip_prefix("decoder_layers.") {
            return Cow::Owned(format!("h.{rest}"));
        }
        match declared {
            "token_embedding.weight" => Cow::Borrowed("wte.weight"),
            "lm_head.weight" => Cow::Borrowed("unembed.weight"),
            _ => Cow::Borrowed(declared),
        }
    }
    fn transposed(&self, declared: &str, role: Role) -> bool {
        role == Role::Matmul && declared.contains(".self_attn.")
    }
}

#[test]
fn a_renamed_and_transposed_layout_loads_into_the_declared_tensors() {
    let bytes = std::fs::read("tests/fixtures/models/decoder_a.safetensors").unwrap();
    let ck = Checkpoint::from_bytes(&bytes).unwrap();
    let roles: HashMap<String, Role> = Listing::of(&ck.config).into_iter().map(|d| (d.name, d.role)).collect();

    // write the same tensors in the toy layout
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut transposed = 0;
    for (name, t) in &ck.tensors {
        let (mut shape, mut data) = (t.shape.clone(), t.data.clone());
        if Toy.transposed(name, roles[name]) {
            let (r, c) = (shape[0], shape[1]);
            data = (0..c).flat_map(|j| (0..r).map(move |i| (i, j))).map(|(i, j)| t.data[i * c + j]).collect();
            shape = vec![c, r];
            transposed += 1;
        }
        owned.push((Toy.file_name(name).into_owned(), shape, data.iter().flat_map(|x| x.to_le_bytes()).collect()));
    }
    assert_eq!(transposed, 8, "w_q, w_k, w_v, w_o of the two layers");
    let views: Vec<(String, safetensors::tensor::TensorView)> = owned
        .iter()
        .map(|(n, s, d)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d).unwrap()))
        .collect();
    let meta: HashMap<String, String> = ck.metadata.clone();
    let file = safetensors::serialize(views, Some(meta)).unwrap();

    // the canonical layout does not find it, and says which tensor it looked for
    let e = Checkpoint::from_bytes(&file).unwrap_err().to_string();
    assert!(e.starts_with("missing tensor \"token_embedding.weight\""), "{e}");

    // the toy layout loads it into the very same tensors, by their declared names
    let back = Checkpoint::from_bytes_in(&file, &Toy, |_| Ok(())).unwrap();
    assert_eq!(back.tensors.len(), ck.tensors.len());
    for (name, t) in &ck.tensors {
        let b = &back.tensors[name];
        assert_eq!((&b.shape, &b.data), (&t.shape, &t.data), "{name}");
    }
}

#[test]
fn the_fast_cpu_backend_s_packed_weights_are_in_the_memory_demand() {
    let bytes = std::fs::read("tests/fixtures/models/decoder_a.safetensors").unwrap();
    let cfg = Checkpoint::from_bytes(&bytes).unwrap().config;
    assert_eq!((cfg.vocab_size, cfg.d_model, cfg.d_ff, cfg.num_layers), (48, 24, 48, 2));
    // every matmul weight (N, K) packs into ceil(N/16)*16 rows of K: per layer 4 attention (24, 24)
    // -> 32*24 each, linear1 (48, 24) -> 48*24, linear2 (24, 48) -> 32*48; lm_head (48, 24) -> 48*24
    let packed = 2 * (4 * 32 * 24 + 48 * 24 + 32 * 48) + 48 * 24;
    let matmul = 2 * (4 * 24 * 24 + 48 * 24 + 24 * 48) + 48 * 24;
    // what a load allocates (its run state is state::Plan::at_load)
    let at_load = tinyformer::model::state::Plan::at_load(&cfg);
    let plain = memory::demand_for(&cfg, WeightCopies::None, &at_load);
    let fast = memory::demand_for(&cfg, WeightCopies::Panels(16), &at_load);
    // the fast backend holds the matmul weights as panels *instead of* their rows: the rows' bytes out,
    // the (padded) panels' in
    assert_eq!(fast.total_bytes + 4 * matmul as u64 - plain.total_bytes, 4 * packed as u64);
    assert!(fast.items.iter().any(|i| i.what == "packed weights" && i.bytes == 4 * packed as u64), "{:?}", fast.items);
    assert_eq!(fast.run_state_bytes(), plain.run_state_bytes());
    // 16-bit panels where the file is F16 / BF16 and the backend keeps them so
    let fast16 = memory::demand_of(&cfg, WeightCopies::Panels(16), &at_load, true);
    assert!(fast16.items.iter().any(|i| i.what == "packed weights" && i.bytes == 2 * packed as u64), "{:?}", fast16.items);

    // the loader asks the backend: a budget that holds the model's rows loads it on the reference CPU
    // backend and refuses it on the fast one (its panels are padded to 16 rows)
    let budget = memory::Budget::cli(plain.total_bytes);
    assert!(Model::load_within(&CpuBackend, &bytes, &budget).is_ok());
    let e = Model::load_within(&tinyformer::fastcpu::FastCpuBackend::default(), &bytes, &budget).err().expect("over budget").to_string();
    assert!(
        e.contains(&format!("the model needs {} of memory ({} bytes)", memory::human_bytes(fast.total_bytes), fast.total_bytes)),
        "{e}"
    );
    assert!(Model::load_within(&tinyformer::fastcpu::FastCpuBackend::default(), &bytes, &memory::Budget::cli(fast.total_bytes)).is_ok());
}
