// GPT-2 small (124M) in the page vs onnxruntime-web, as JSON: the --gpt2-small half of scripts/bench-peers.sh
// (issue 24 §4). Needs train/gpt2_small_peer.py's folder (GPT2_DIR, default bench-out/gpt2-small: f32/ and f16/
// Hugging Face folders, onnx/gpt2.{f32,f16}.onnx), the wasm builds (scripts/build-wasm.sh), the release CLI
// (target/release/tinyformer, or TINYFORMER_CLI) and node_modules/onnxruntime-web (npm ci).
//
// Per precision (f32, then f16), in one headless Chromium, on the same ids ((7 i + 3) mod 384, as
// train/gpt2_small_cost.py):
//   tinyformer_wasm_cpu   the page's path: www/worker.js itself, given the folder's files as File objects picked
//                         through an <input type=file> ('load' with files, read in slices by the core; the
//                         relaxed-SIMD build where the browser validates it), then 'generate' as the page calls it
//   ort_wasm_1thread      onnxruntime-web's wasm EP, numThreads 1, on the picked .onnx file's bytes
//   ort_wasm_2threads     the same with numThreads 2 (the bench's server sends COOP/COEP: crossOriginIsolated)
//   tinyformer_webgpu     the worker with preferGpu (SwiftShader here)
//   ort_webgpu            onnxruntime-web's webgpu EP, K/V kept on the GPU between steps
// The ONNX graph is transformers.js's way of running GPT-2 (one decoder with past_key_values: the prompt with an
// empty past, each token with the cache, argmax of the last row of the logits in JS).
// Workload: greedy decode of BENCH_TOKENS (default 32) new tokens after a 16-token prompt, tok/s = tokens / the
// whole generation (prompt pass included), and a 128-token prefill in ms (its argmax checked too). CPU engines:
// warmed up by one generation each, then best of BENCH_REPS (default 3) with the engines interleaved within each
// repetition (a shared machine's load falls on all alike). WebGPU engines (SwiftShader: Vulkan on the CPU, a
// 124M model is slow there): one warm-up generation of 2 tokens, then BENCH_GPU_TOKENS (default 4) new tokens and
// one prefill-128, once, within BENCH_GPU_TIMEOUT_S (default 900) each.
// Load = from the files being in the page (picked) to the first generated token: for tinyformer the worker's
// 'load' + a 1-token 'generate'; for onnxruntime-web file.arrayBuffer() + InferenceSession.create + the first
// run (as transformers.js hands ORT the model's bytes). Peak memory (CPU engines): each engine runs in its own
// browser context, hence its own renderer process (the page and its workers); its peak RSS (VmHWM, reset through
// /proc/PID/clear_refs just before the load) is read from the OS after the timings, next to the RSS before the
// load (Chromium starts two renderers per context here, one left idle: the larger peak is the page's). The
// weights' bytes are the safetensors file's. The native CLI runs the same workload on the same folder (its own
// timing of the generation, prompt pass included, less the first pass's weight packing, which the page's timings
// leave out by their warm-up (see nativeRep); prefill = a 1-token generation after the 128 ids, less the same;
// load = the wall time of a 1-token run; peak RSS from /usr/bin/time), one thread pinned to core 0 (taskset -c 0) and,
// as a second row, one thread not pinned (on a shared machine the OS may move it to the less busy core, as it
// may the browser's threads), interleaved with the CPU engines in each repetition.
//   node scripts/bench-gpt2-small.mjs            (BENCH_PRECISIONS=f32,f16; BENCH_WEBGPU=0 leaves WebGPU out)
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { chromium } from 'playwright-core';
import { startServer } from './serve.mjs';

const root = new URL('..', import.meta.url).pathname;
const dir = path.relative(root, path.resolve(root, process.env.GPT2_DIR ?? 'bench-out/gpt2-small'));
const reps = Number(process.env.BENCH_REPS ?? 3);
const tokens = Number(process.env.BENCH_TOKENS ?? 32);
const gpuTokens = Number(process.env.BENCH_GPU_TOKENS ?? 4);
const webgpu = process.env.BENCH_WEBGPU !== '0';
const gpuTimeout = Number(process.env.BENCH_GPU_TIMEOUT_S ?? 900);
// each engine's figures on stderr as soon as it is done (a long run can be followed, or cut short)
const progress = (what, res) => console.error(`bench-gpt2-small: ${what}: ${JSON.stringify(res)}`);
const precisions = (process.env.BENCH_PRECISIONS ?? 'f32,f16').split(',');
const cli = process.env.TINYFORMER_CLI ?? `${process.env.CARGO_TARGET_DIR ?? `${root}/target`}/release/tinyformer`;
const ORT_DIST = 'node_modules/onnxruntime-web/dist';
const ortVersion = JSON.parse(fs.readFileSync(`${root}/${ORT_DIST}/../package.json`, 'utf8')).version;
const ids = (n) => Array.from({ length: n }, (_, i) => (7 * i + 3) % 384);
const PROMPT = ids(16);
const LONG = ids(128);
const MiB = 1 << 20;
const loadavg = () => fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');

for (const p of precisions) {
  for (const f of [`${dir}/${p}/model.safetensors`, `${dir}/onnx/gpt2.${p}.onnx`]) {
    if (!fs.existsSync(`${root}/${f}`)) {
      console.error(`bench-gpt2-small: ${f} is missing: run python3 train/gpt2_small_peer.py first`);
      process.exit(2);
    }
  }
}

// --- the native CLI, 1 thread: pinned to core 0 (taskset -c 0), and unpinned (--threads 1 still: one thread that
// the OS may move to the less busy core of a shared machine). One repetition per call, folded into `acc`.
function nativeRep(folder, acc, pinned) {
  const run = (prompt, n) => {
    const argv = ['/usr/bin/time', '-f', '%M', cli, 'generate', '--model', folder, '--backend', 'cpu', '--threads', '1',
      '--ids', prompt.join(','), '--max-new-tokens', String(n), '--greedy', '--memory-budget', '8GiB'];
    const t = performance.now();
    const r = pinned ? spawnSync('taskset', ['-c', '0', ...argv], { encoding: 'utf8', maxBuffer: 1 << 24 })
      : spawnSync(argv[0], argv.slice(1), { encoding: 'utf8', maxBuffer: 1 << 24 });
    const wall = (performance.now() - t) / 1000;
    if (r.status !== 0) throw new Error(`tinyformer CLI: ${(r.stderr || r.error || '').toString().slice(0, 300)}`);
    const out = JSON.parse(r.stdout);
    const rssKiB = Number(r.stderr.trim().split('\n').pop());
    return { wall, tps: out.tokens_per_second, ids: out.ids.slice(prompt.length), rssMiB: rssKiB / 1024 };
  };
  acc.engine ??= `tinyformer CLI (release), fast CPU path, --threads 1${pinned ? ', taskset -c 0' : ', not pinned'}`;
  // Until 2026-12-08 each CLI run packed the weights' panels on their first use, inside its timed generation
  // (about 1 s for GPT-2 small), where the page's timings come after a warm-up generation. A 1-token run on 1 id
  // measures that (the packing plus one token's pass), and the corrected figures subtract it: decode over
  // (generation - it), prefill = the 128-id run's generation - it. The weights are now packed at load (outside
  // the timed generation), so what is subtracted is one token's pass: the corrected figures slightly favour
  // the CLI. The raw figures (as the CLI prints them) are kept beside, and are now the fairer ones.
  const w = run([3], 1);
  if (pinned) {
    // load + first token: the wall time of a run of 1 new token after the prompt (started to exited)
    const a = run(PROMPT, 1);
    acc.load_to_first_token_s = Math.min(acc.load_to_first_token_s ?? Infinity, a.wall);
    acc.peak_rss_mib = Math.max(acc.peak_rss_mib ?? 0, a.rssMiB, w.rssMiB);
  }
  const packS = 1 / w.tps;
  const b = run(PROMPT, tokens);
  const c = run(LONG, 1);
  acc.raw_decode_tokens_per_second = Math.max(acc.raw_decode_tokens_per_second ?? 0, b.tps);
  acc.raw_prefill_128_ms = Math.min(acc.raw_prefill_128_ms ?? Infinity, 1000 / c.tps);
  acc.first_pass_packing_ms = Math.min(acc.first_pass_packing_ms ?? Infinity, 1000 * packS);
  // (a difference at or under 0: too few tokens to tell the packing apart; left out)
  const genS = tokens / b.tps - packS;
  const preS = 1 / c.tps - packS;
  if (genS > 0) acc.decode_tokens_per_second = Math.max(acc.decode_tokens_per_second ?? 0, tokens / genS);
  if (preS > 0) acc.prefill_128_ms = Math.min(acc.prefill_128_ms ?? Infinity, 1000 * preS);
  acc.ids = b.ids;
  acc.prefill_argmax = c.ids[0];
  if (pinned) acc.peak_rss_mib = Math.max(acc.peak_rss_mib, b.rssMiB, c.rssMiB);
}

// --- the browser
// A page with nothing on it (no app, no worker of its own), on the bench's server (COOP/COEP, CSP)
fs.writeFileSync(`${root}/${dir}/blank.html`, '<!doctype html><meta charset="utf-8"><title>bench</title><input type="file" id="f" multiple>\n');
const srv = await startServer({ root, port: 0, extraPaths: [dir, ORT_DIST] });
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--enable-unsafe-webgpu', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    // no spare renderer kept ready: each context's renderer is then the process that appears with it
    '--disable-features=SpareRendererForSitePerProcess'],
});
const foreign = [];
const pageErrors = [];

const rendererPids = () => new Set(fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d)).filter((d) => {
  try {
    return fs.readFileSync(`/proc/${d}/cmdline`, 'utf8').includes('--type=renderer');
  } catch {
    return false;
  }
}).map(Number));
// MiB, or 0 for a process that has exited (the context's idle renderer may)
const status = (pid, key) => {
  let text = '';
  try {
    text = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return 0;
  }
  const m = text.match(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm'));
  return m ? Number(m[1]) / 1024 : 0;
};

// A page in a context of its own (its own renderer process), with the engine code defined on window.
async function openPage() {
  const before = rendererPids();
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  const origin = new URL(srv.url).origin;
  page.on('request', (req) => {
    const u = req.url();
    if (!u.startsWith('data:') && !u.startsWith('blob:') && new URL(u).origin !== origin) foreign.push(u);
  });
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  await page.goto(`${srv.url}${dir}/blank.html`);
  const pids = [...rendererPids()].filter((p) => !before.has(p));
  await page.evaluate(ENGINES, { PROMPT, LONG, ortDist: ORT_DIST });
  // Chromium starts two renderers for a new context here (one is left idle after the navigation): the page's
  // is the one whose peak grows with the model, so the largest peak of the context's renderers is taken.
  return { ctx, page, pids };
}

// Defined in each page: window.makeEngine(kind, opts) -> engine on window.engine
const ENGINES = ({ PROMPT, LONG, ortDist }) => {
  const f16ToF32 = (h) => {
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >> 10) & 0x1f;
    const m = h & 0x3ff;
    if (e === 0) return s * m * 2 ** -24;
    if (e === 31) return m ? NaN : s * Infinity;
    return s * (1 + m / 1024) * 2 ** (e - 15);
  };
  const argmaxLast = (data, v) => {
    const off = data.length - v;
    const half = data instanceof Uint16Array;
    let best = -Infinity; let at = 0;
    for (let i = 0; i < v; i++) {
      const x = half ? f16ToF32(data[off + i]) : Number(data[off + i]);
      if (x > best) { best = x; at = i; }
    }
    return at;
  };
  const files = () => [...document.getElementById('f').files];

  // the page's worker, driven as app.js drives it
  const tinyformer = async (preferGpu) => {
    const worker = new Worker('/www/worker.js', { type: 'module' });
    const pending = new Map();
    let nextId = 1;
    worker.addEventListener('message', (ev) => {
      const m = ev.data;
      const p = pending.get(m?.id);
      if (!p || m.started) return;
      if (m.event !== undefined) return p.onEvent?.(m.event);
      pending.delete(m.id);
      if (m.ok) p.resolve(m.result); else p.reject(new Error(m.error));
    });
    const call = (type, args = {}, onEvent) => new Promise((resolve, reject) => {
      const id = nextId++;
      pending.set(id, { resolve, reject, onEvent });
      worker.postMessage({ id, type, ...args });
    });
    const init = await call('init');
    if (preferGpu && !init.gpu?.ok) throw new Error(`no WebGPU adapter: ${init.gpu?.error}`);
    const gen = async (ids, n) => {
      const got = [];
      await call('generate', { ids, opts: { max_new_tokens: n, temperature: 0, kv_cache: true } }, (ev) => {
        if (ev.kind === 'tokens') got.push(...ev.steps.map((t) => t.id));
      });
      return got;
    };
    const t0 = performance.now();
    const card = await call('load', { files: files(), preferGpu });
    const first = await gen(PROMPT, 1);
    const loadMs = performance.now() - t0;
    return {
      info: { backend: card.backend, isa: init.isa, first_id: first[0],
        ...(preferGpu ? { adapter: init.browserAdapter, kernels: await call('gpuKernels') } : {}) },
      loadMs,
      generate: (n) => gen(PROMPT, n),
      prefill: async () => (await gen(LONG, 1))[0],
    };
  };

  // onnxruntime-web, as transformers.js runs a decoder with past_key_values
  const ortEngine = async (ep, threads) => {
    const ort = await import(ep === 'webgpu' ? `/${ortDist}/ort.webgpu.min.mjs` : `/${ortDist}/ort.wasm.min.mjs`);
    ort.env.wasm.numThreads = threads;
    ort.env.wasm.proxy = false;
    ort.env.wasm.wasmPaths = `/${ortDist}/`;
    const file = files().find((f) => f.name.endsWith('.onnx'));
    const t0 = performance.now();
    const bytes = new Uint8Array(await file.arrayBuffer());
    const opts = { executionProviders: [ep], graphOptimizationLevel: 'all' };
    let sess = await ort.InferenceSession.create(bytes, opts);
    const presents = sess.outputNames.filter((n) => n.startsWith('present.'));
    if (ep === 'webgpu') {
      // keep the K/V on the GPU between steps (as transformers.js does on WebGPU); the logits come back
      await sess.release();
      sess = await ort.InferenceSession.create(bytes, {
        ...opts, preferredOutputLocation: Object.fromEntries(presents.map((n) => [n, 'gpu-buffer'])),
      });
    }
    const meta = sess.inputMetadata?.find?.((m) => m.name === 'past_key_values.0.key');
    const kvType = meta?.type ?? (file.name.includes('f16') ? 'float16' : 'float32');
    const heads = 12; const hd = 64; const vocab = 50257;
    const i64 = (a, dims) => new ort.Tensor('int64', BigInt64Array.from(a, BigInt), dims);
    const empty = () => new ort.Tensor(kvType, kvType === 'float16' ? new Uint16Array(0) : new Float32Array(0), [1, heads, 0, hd]);
    const step = async (ids, past, p) => {
      const t = ids.length;
      const feed = { input_ids: i64(ids, [1, t]), attention_mask: i64(new Array(p + t).fill(1), [1, p + t]),
        position_ids: i64(ids.map((_, i) => p + i), [1, t]) };
      for (const n of presents) feed[n.replace('present.', 'past_key_values.')] = past ? past[n] : empty();
      const r = await sess.run(feed);
      const id = argmaxLast(await r.logits.getData(), vocab);
      r.logits.dispose();
      if (past) for (const n of presents) past[n].dispose();
      return { id, past: r };
    };
    const generate = async (n) => {
      let { id, past } = await step(PROMPT, null, 0);
      const got = [id];
      for (let p = PROMPT.length; got.length < n; p++) {
        ({ id, past } = await step([id], past, p));
        got.push(id);
      }
      for (const k of presents) past[k].dispose();
      return got;
    };
    const first = await generate(1);
    const loadMs = performance.now() - t0;
    return {
      info: { ep, threads: ep === 'wasm' ? threads : undefined, kv_type: kvType, first_id: first[0],
        cross_origin_isolated: self.crossOriginIsolated },
      loadMs,
      generate,
      prefill: async () => {
        const { id, past } = await step(LONG, null, 0);
        for (const k of presents) past[k].dispose();
        return id;
      },
    };
  };

  window.makeEngine = async (kind) => {
    const make = {
      tinyformer_wasm_cpu: () => tinyformer(false),
      tinyformer_webgpu: () => tinyformer(true),
      ort_wasm_1thread: () => ortEngine('wasm', 1),
      ort_wasm_2threads: () => ortEngine('wasm', 2),
      ort_webgpu: () => ortEngine('webgpu', 1),
    }[kind];
    window.engine = await make();
    return { ...window.engine.info, load_to_first_token_ms: window.engine.loadMs };
  };
  window.timeEngine = async (n) => {
    let t = performance.now();
    const got = await window.engine.generate(n);
    const dt = performance.now() - t;
    t = performance.now();
    const pre = await window.engine.prefill();
    return { decode_ms: dt, prefill_128_ms: performance.now() - t, ids: got, prefill_argmax: pre };
  };
};

const weightBytes = (p) => fs.statSync(`${root}/${dir}/${p}/model.safetensors`).size;
const filesFor = (kind, p) => (kind.startsWith('ort')
  ? [`${root}/${dir}/onnx/gpt2.${p}.onnx`]
  : ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json'].map((f) => `${root}/${dir}/${p}/${f}`));

async function start(kind, p) {
  const e = await openPage();
  e.kind = kind;
  e.res = {};
  await e.page.setInputFiles('#f', filesFor(kind, p));
  e.res.rss_before_load_mib = Math.max(0, ...e.pids.map((pid) => status(pid, 'VmRSS')));
  for (const pid of e.pids) {
    try {
      fs.writeFileSync(`/proc/${pid}/clear_refs`, '5'); // resets VmHWM (peak RSS) to the current RSS
    } catch { /* exited */ }
  }
  try {
    Object.assign(e.res, await e.page.evaluate((k) => window.makeEngine(k), kind));
  } catch (err) {
    e.res.error = String(err?.message ?? err).split('\n')[0];
  }
  return e;
}

const fold = (res, t, n) => {
  const tps = n / (t.decode_ms / 1000);
  if (!(res.decode_tokens_per_second >= tps)) res.decode_tokens_per_second = tps;
  res.prefill_128_ms = Math.min(res.prefill_128_ms ?? Infinity, t.prefill_128_ms);
  res.ids = t.ids;
  res.prefill_argmax = t.prefill_argmax;
};

const firstDiff = (a, b) => {
  for (let i = 0; i < Math.max(a.length, b.length); i++) if (a[i] !== b[i]) return i;
  return -1;
};

const out = {
  bench: 'gpt2_small_peers', chromium: browser.version(), onnxruntime_web: ortVersion, cpu_cores: (await import('node:os')).cpus().length,
  workload: `GPT-2 small shape (124M, random weights), batch 1, greedy, KV cache: ${tokens} new tokens after a 16-token prompt (tok/s over the whole generation, prompt pass included), and a 128-token prefill; WebGPU rows ${gpuTokens} tokens and one prefill`,
  reps, loadavg_start: loadavg(), precisions: {},
};
let failed = false;
try {
  for (const p of precisions) {
    const P = { weights_bytes: weightBytes(p) };
    out.precisions[p] = P;
    // CPU engines, one context each, loaded one after the other
    const cpu = [];
    for (const kind of ['tinyformer_wasm_cpu', 'ort_wasm_1thread', 'ort_wasm_2threads']) cpu.push(await start(kind, p));
    const live = cpu.filter((e) => !e.res.error);
    for (const e of live) await e.page.evaluate((n) => window.timeEngine(n), tokens); // warm-up
    const folder = `${root}/${dir}/${p}`;
    P.native_cli = {};
    P.native_cli_unpinned = {};
    for (let r = 0; r < reps; r++) {
      nativeRep(folder, P.native_cli, true);
      for (const e of live) fold(e.res, await e.page.evaluate((n) => window.timeEngine(n), tokens), tokens);
      nativeRep(folder, P.native_cli_unpinned, false);
    }
    for (const e of cpu) {
      if (e.pids.length) {
        e.res.peak_rss_mib = Math.max(...e.pids.map((pid) => status(pid, 'VmHWM')));
        e.res.peak_rss_over_weights = (e.res.peak_rss_mib * MiB) / P.weights_bytes;
      }
      P[e.kind] = e.res;
      await e.ctx.close();
      progress(`${p} ${e.kind}`, e.res);
    }
    progress(`${p} native_cli`, P.native_cli);
    if (webgpu) {
      for (const kind of ['tinyformer_webgpu', 'ort_webgpu']) {
        // a WebGPU engine gets BENCH_GPU_TIMEOUT_S (default 900) for its load, warm-up and timing together
        let timer;
        const cap = new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error(`not done after BENCH_GPU_TIMEOUT_S = ${gpuTimeout} s (stopped)`)), gpuTimeout * 1000);
        });
        const e = { kind, res: {}, ctx: null };
        try {
          await Promise.race([cap, (async () => {
            Object.assign(e, await start(kind, p));
            if (e.res.error) return;
            await e.page.evaluate(() => window.engine.generate(2));
            fold(e.res, await e.page.evaluate((n) => window.timeEngine(n), gpuTokens), gpuTokens);
            e.res.tokens = gpuTokens;
          })()]);
        } catch (err) {
          e.res.error = String(err?.message ?? err).split('\n')[0];
        }
        clearTimeout(timer);
        // (on a timeout the context may not be known yet: no other context is open here, so close them all)
        if (!e.ctx) for (const c of browser.contexts()) await c.close();
        delete e.res.rss_before_load_mib; // the GPU's memory is in the GPU process, not the renderer
        P[e.kind] = e.res;
        await e.ctx?.close();
        progress(`${p} ${kind}`, e.res);
      }
    }
    // same ids: every engine against the native CLI (f32: must agree; f16: where they diverge is reported)
    const ref = P.native_cli;
    P.ids_vs_native_cli = {};
    for (const [k, v] of Object.entries(P)) {
      if (k === 'native_cli' || !Array.isArray(v?.ids)) continue;
      const n = Math.min(v.ids.length, ref.ids.length);
      const d = firstDiff(v.ids.slice(0, n), ref.ids.slice(0, n));
      P.ids_vs_native_cli[k] = { same: d < 0 && v.prefill_argmax === ref.prefill_argmax, first_diverging_token: d < 0 ? null : d,
        prefill_argmax_same: v.prefill_argmax === ref.prefill_argmax, compared_tokens: n };
    }
    P.same_ids = Object.values(P.ids_vs_native_cli).every((x) => x.same);
    if (p === 'f32' && !P.same_ids) failed = true;
    const ratio = (a, b) => (a?.ids && b?.ids
      ? { decode: a.decode_tokens_per_second / b.decode_tokens_per_second, prefill_128: b.prefill_128_ms / a.prefill_128_ms,
        load: (b.load_to_first_token_ms ?? b.load_to_first_token_s * 1000) / (a.load_to_first_token_ms ?? a.load_to_first_token_s * 1000) }
      : undefined);
    P.ratios = Object.fromEntries(Object.entries({
      tinyformer_wasm_cpu_over_ort_wasm_1thread: ratio(P.tinyformer_wasm_cpu, P.ort_wasm_1thread),
      tinyformer_wasm_cpu_over_ort_wasm_2threads: ratio(P.tinyformer_wasm_cpu, P.ort_wasm_2threads),
      tinyformer_webgpu_over_ort_webgpu: ratio(P.tinyformer_webgpu, P.ort_webgpu),
      tinyformer_wasm_cpu_over_native_cli: ratio(P.tinyformer_wasm_cpu, P.native_cli),
      tinyformer_wasm_cpu_over_native_cli_unpinned: ratio(P.tinyformer_wasm_cpu, P.native_cli_unpinned),
    }).filter(([, v]) => v));
    for (const v of Object.values(P)) if (v && typeof v === 'object' && Array.isArray(v.ids)) v.ids = v.ids.join(',');
  }
} finally {
  await browser.close();
  srv.close();
  fs.rmSync(`${root}/${dir}/blank.html`, { force: true });
}
out.loadavg_end = loadavg();
out.foreign_requests = foreign;
out.page_errors = pageErrors;
if (foreign.length) failed = true;
console.log(JSON.stringify(out, null, 1));
process.exit(failed ? 1 : 0);
