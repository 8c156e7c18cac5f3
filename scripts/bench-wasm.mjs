// The page's wasm core run directly in node (no page, no worker), for comparing builds side by side: each mode
// takes one or more wasm-bindgen output folders (www/pkg, www/pkg-relaxed, or an older build copied elsewhere) and
// interleaves them, so that load from other processes falls on all of them alike. Prints JSON.
//
//   node --experimental-wasm-relaxed-simd scripts/bench-wasm.mjs kernels DIR...   the fast CPU kernels one by one on
//       the training lab's Shakespeare preset's shapes (src/fastcpu/bench.rs, export fastcpu_kernel_bench; the native
//       twin: `cargo run --release --example bench_cpu -- kernels-train`); per kernel the best of BENCH_ROUNDS (3);
//       BENCH_DECODE=1 adds GPT-2 small's decode GEMVs (~310 MB of wasm memory for the tied head)
//   node --experimental-wasm-relaxed-simd scripts/bench-wasm.mjs train DIR...     the lab's Shakespeare preset
//       (train_start / train_run, as the page's worker calls them): BENCH_ROUNDS (4) segments of BENCH_STEPS (10)
//       steps per build, tokens/s per segment over the lab's own step time, and the first losses (the same seed
//       gives the same bits on the same build)
//   node --experimental-wasm-relaxed-simd scripts/bench-wasm.mjs gpt2 DIR MODEL_DIR   a Hugging Face directory
//       loaded through load_files (slices read on demand, as the worker does) on the CPU path, then greedy decode
//       of 32 tokens after a 16-token prompt, BENCH_ROUNDS (2) times: tok/s over gen_next's calls after the first
//
// Node 20's V8 needs --experimental-wasm-relaxed-simd to validate the relaxed build (newer versions have it on).
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';

const [mode, ...rest] = process.argv.slice(2);
const env = process.env;

async function load(dir) {
  const core = await import(path.resolve(dir, 'tinyformer.js'));
  core.initSync({ module: fs.readFileSync(path.resolve(dir, 'tinyformer_bg.wasm')) });
  return core;
}

async function kernels(dirs) {
  const rounds = Number(env.BENCH_ROUNDS ?? 3);
  const builds = [];
  for (const d of dirs) builds.push({ dir: d, core: await load(d), runs: [] });
  for (let r = 0; r < rounds; r++) for (const b of builds) b.runs.push(b.core.fastcpu_kernel_bench(Number(env.BENCH_MIN_MS ?? 10), env.BENCH_DECODE === '1'));
  return builds.map((b) => {
    const ks = b.runs[0].map((k, i) => ({ name: k.name, per_step: k.per_step, ms: Math.min(...b.runs.map((r) => r[i].ms)) }));
    const step = ks.reduce((a, k) => a + k.ms * k.per_step, 0);
    return { dir: b.dir, isa: b.core.cpu_isa(), step_ms_of_kernels: +step.toFixed(2), kernels: ks.map((k) => ({ ...k, ms: +k.ms.toFixed(4) })) };
  });
}

async function train(dirs) {
  const rounds = Number(env.BENCH_ROUNDS ?? 4);
  const steps = Number(env.BENCH_STEPS ?? 10);
  const text = zlib.gunzipSync(fs.readFileSync(new URL('../www/data/shakespeare.txt.gz', import.meta.url))).toString('utf8');
  const builds = [];
  for (const d of dirs) {
    const core = await load(d);
    const plan = await core.train_start({ preset: 'shakespeare', steps: 100000, eval_every: 0 }, text, false);
    await core.train_run(3, 1); // warm-up (V8 tiers the hot functions up)
    builds.push({ dir: d, core, plan: plan.settings, tps: [] });
  }
  for (let r = 0; r < rounds; r++) {
    for (const b of builds) {
      const before = b.core.train_log().at(-1);
      const last = (await b.core.train_run(steps, 1)).logs.at(-1);
      b.tps.push(Math.round((steps * b.plan.batch * b.plan.context) / (last.elapsed_s - before.elapsed_s)));
    }
  }
  return builds.map((b) => {
    const log = b.core.train_log();
    return { dir: b.dir, isa: b.core.cpu_isa(), batch: b.plan.batch, context: b.plan.context, tokens_per_s: b.tps, first_losses: log.slice(0, 4).map((l) => l.loss), step: log.at(-1).step, last_loss: log.at(-1).loss };
  });
}

async function gpt2(dir, modelDir) {
  const core = await load(dir);
  const names = fs.readdirSync(modelDir).sort();
  const sizes = names.map((n) => fs.statSync(path.join(modelDir, n)).size);
  const fds = Object.fromEntries(names.map((n) => [n, fs.openSync(path.join(modelDir, n), 'r')]));
  const read = (name, start, len) => {
    const b = new Uint8Array(len);
    fs.readSync(fds[name], b, 0, len, start);
    return b;
  };
  const t = performance.now();
  const card = await core.load_files(names, sizes, read, false);
  const loadS = (performance.now() - t) / 1000;
  const prompt = Array.from({ length: 16 }, (_, i) => (i * 37 + 11) % 384);
  const runs = [];
  for (let r = 0; r < Number(env.BENCH_ROUNDS ?? 2); r++) {
    core.gen_start(new Uint32Array(prompt), { max_new_tokens: 33, temperature: 0 });
    const ms = [];
    const ids = [];
    for (;;) {
      const t0 = performance.now();
      const s = await core.gen_next();
      if (!s || (s.done && s.id === undefined)) break;
      ms.push(performance.now() - t0);
      ids.push(s.id);
      if (s.done) break;
    }
    const dec = ms.slice(1);
    runs.push({ tokens: ids.length, first_ms: +ms[0].toFixed(1), decode_tok_s: +((1000 * dec.length) / dec.reduce((a, b) => a + b, 0)).toFixed(2), ids: ids.slice(0, 4) });
  }
  return { dir, isa: core.cpu_isa(), backend: card.backend, prompt_ids: prompt, load_s: +loadS.toFixed(1), runs };
}

let out;
if (mode === 'kernels' && rest.length) out = await kernels(rest);
else if (mode === 'train' && rest.length) out = await train(rest);
else if (mode === 'gpt2' && rest.length === 2) out = await gpt2(rest[0], rest[1]);
else {
  console.error('usage: bench-wasm.mjs kernels DIR... | train DIR... | gpt2 DIR MODEL_DIR');
  process.exit(2);
}
console.log(JSON.stringify({ mode, node: process.version, results: out }, null, 1));
