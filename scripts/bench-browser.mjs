// The WebGPU path's variants in headless Chromium (SwiftShader on machines without a GPU), as JSON, for one
// shipped model: what the page's worker chooses per adapter (www/worker.js) is decided from these figures.
//   node scripts/bench-browser.mjs [models/shakespeare-llama.safetensors] [tokens]   (default 32 tokens)
// In one page, on one loaded GPU model (the kernels switched with set_gpu_kernels, no reload):
//   decode    greedy, KV cache, `tokens` new tokens after a 3-token prompt, tok/s over the whole generation
//             (prompt pass included), for each decode kernel set (fused ops on/off x one-row passes on the
//             GEMV or one thread per output) at K = 1, and for the fused sets at K = 2, 4, 8 tokens per
//             submission; dispatches and submissions per token from the core's counters
//   prefill   a 128-token prompt and one new token (ms), for each kernel set of passes of 8 rows or more:
//             matmul naive, tiled, tiled4, reg (barrier-free), each with attention and the norms a workgroup per
//             row; reg with the barrier-free attention (reg_attn_rows); tiled4 and reg with the barrier-free
//             attention and norms (*_rows); BENCH_PREFILL_KINDS picks some by name
//   worker    the page's own path: www/worker.js's 'load' (its kernel choice for this adapter) and 'generate'
//             (its K adaptation), decode as above and prefill-128
//   options   sampling options with the worker's kernel choice, K = 1 (temperature/top-k, top-10 candidates,
//             attention rows)
//   cpu       the CPU path (same build), decode
//   worker_cpu the CPU path through www/worker.js ('load' without preferGpu, 'generate'), decode as above, and
//             the 'tokens' messages it posted per generation (worker_cpu_token_messages); BENCH_WORKERS lists
//             other worker scripts to interleave with it (e.g. a copy of an older worker.js under www/), each
//             reported as worker_cpu:<file name>. BENCH_GPU=0 leaves every WebGPU run out (only cpu, worker_cpu).
// Variants are interleaved within each repetition and the best of BENCH_REPS (default 3) is kept, so the load
// of a shared machine falls on all of them alike. BENCH_K (default 1,2,4,8) lists the K values; BENCH_PREFILL=0
// leaves the prefill runs out; BENCH_SETS picks decode kernel sets (see below). All greedy runs must give the same ids, and every prefill
// kernel set the same next token (same_ids, prefill_same_token in the output; exit code 1
// otherwise). Needs the wasm build (scripts/build-wasm.sh) and playwright-core (npm ci).
import { chromium } from 'playwright-core';
import { startServer } from './serve.mjs';

const model = process.argv[2] ?? 'models/shakespeare-llama.safetensors';
const tokens = Number(process.argv[3] ?? 32);
const reps = Number(process.env.BENCH_REPS ?? 3);
const ks = (process.env.BENCH_K ?? '1,2,4,8').split(',').map(Number);
const prefill = process.env.BENCH_PREFILL !== '0';
// BENCH_PREFILL_KINDS: a comma-separated subset of naive, tiled, tiled4, tiled4_rows, reg, reg_attn_rows, reg_rows
const prefillNames = process.env.BENCH_PREFILL_KINDS ? process.env.BENCH_PREFILL_KINDS.split(',') : null;
// BENCH_SETS: a comma-separated subset of fused_naive, fused_gemv, fused_rows, unfused_naive, unfused_gemv (default
// all). BENCH_WIDEN=1 / 0: the core's model widens 16-bit weights to f32 at load or not (default: the core's
// policy for the adapter, widened on SwiftShader; set_gpu_widen16); reported as widen16.
const sets = process.env.BENCH_SETS ? process.env.BENCH_SETS.split(',') : null;
const widen = process.env.BENCH_WIDEN;
const useGpu = process.env.BENCH_GPU !== '0';
const workerUrls = ['/www/worker.js', ...(process.env.BENCH_WORKERS ? process.env.BENCH_WORKERS.split(',') : [])];
const root = new URL('..', import.meta.url).pathname;
const srv = await startServer({ root, port: 0 });
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--enable-unsafe-webgpu', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
let ok = true;
try {
  const page = await browser.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('crash', () => console.error('the page crashed'));
  // progress lines from the page (the runs take minutes on SwiftShader)
  page.on('console', (m) => { if (m.text().startsWith('[bench]')) console.error(m.text()); });
  await page.goto(`${srv.url}index.html?nomodel=1`);
  const result = await page.evaluate(async ({ model, tokens, reps, ks, prefill, prefillNames, sets, useGpu, workerUrls, widen }) => {
    const core = await import('/www/pkg/tinyformer.js');
    await core.default();
    const gpu = await core.gpu_init();
    const adapter = (await navigator.gpu?.requestAdapter())?.info;
    const bytes = new Uint8Array(await (await fetch(`/${model}`)).arrayBuffer());
    const prompt = [5, 6, 7];
    const long = Array.from({ length: 128 }, (_, i) => (i * 37 + 11) % 200);

    // --- the page's worker, driven as www/core.js does (a minimal request/response)
    const spawn = (url) => {
      const worker = new Worker(url, { type: 'module' });
      const pending = new Map();
      let nextId = 1;
      worker.addEventListener('message', (e) => {
        const m = e.data;
        const p = pending.get(m?.id);
        if (!p) return;
        if (m.event !== undefined) return p.onEvent?.(m.event);
        if (m.started) return;
        pending.delete(m.id);
        if (m.ok) p.resolve(m.result); else p.reject(new Error(m.error));
      });
      const call = (type, args = {}, onEvent) => new Promise((resolve, reject) => {
        const id = nextId++;
        pending.set(id, { resolve, reject, onEvent });
        worker.postMessage({ id, type, ...args });
      });
      // 'tokens' batches (www/worker.js now) or one 'token' event per token (older workers)
      const generate = async (ids, n) => {
        const got = [];
        let messages = 0;
        const res = await call('generate', { ids, opts: { max_new_tokens: n, temperature: 0 } }, (ev) => {
          if (ev.kind === 'tokens') got.push(...ev.steps.map((t) => t.id));
          if (ev.kind === 'token') got.push(ev.id);
          if (ev.kind === 'tokens' || ev.kind === 'token') messages++;
        });
        return { ids: got, k: res.tokensPerSubmit, messages };
      };
      return { worker, call, generate };
    };
    const { worker, call, generate: workerGenerate } = spawn(workerUrls[0]);

    const out = { decode: {}, prefill_128_ms: {}, prefill_token: {}, dispatches_per_token: {}, submits_per_token: {}, ids: {} };
    const best = (obj, key, v, better) => { if (obj[key] === undefined || better(v, obj[key])) obj[key] = v; };
    const generate = async (opts) => {
      core.gen_start(new Uint32Array(prompt), { max_new_tokens: tokens, ...opts });
      const got = [];
      for (;;) {
        const t = await core.gen_next();
        if (!t || t.id === undefined) break;
        got.push(t.id);
        if (t.done) break;
      }
      return got;
    };
    const kernelSets = [['fused_naive', true, 'naive'], ['fused_gemv', true, 'gemv'], ['fused_rows', true, 'rows'], ['unfused_naive', false, 'naive'], ['unfused_gemv', false, 'gemv']]
      .filter(([name]) => !sets || sets.includes(name));
    const decodeVariants = [];
    for (const [name, fused, few] of kernelSets) {
      for (const k of ks) {
        if (k === 1 || fused) decodeVariants.push([`${name}_k${k}`, fused, few, k]);
      }
    }
    // [name, matmul kernel, attention kernel] of passes of 8 rows or more
    const prefillKinds = prefill
      ? [['naive', 'naive', 'workgroup', 'workgroup'], ['tiled', 'tiled', 'workgroup', 'workgroup'],
        ['tiled4', 'tiled4', 'workgroup', 'workgroup'], ['tiled4_rows', 'tiled4', 'rows', 'rows'],
        ['reg', 'reg', 'workgroup', 'workgroup'], ['reg_attn_rows', 'reg', 'rows', 'workgroup'], ['reg_rows', 'reg', 'rows', 'rows']]
        .filter(([name]) => !prefillNames || prefillNames.includes(name))
      : [];
    // the one new token after the prompt runs the core's one-row kernel (the GEMV): 'naive' has no 16-bit
    // form, and its stand-in (the 64x64 tile for one row) would add several hundred ms to every variant
    const setPrefill = (many, attn, norms) => {
      core.set_gpu_kernels({ fused: true, few_rows: 'gemv', many_rows: many, attention: attn, norms });
    };
    let workerInit = null;
    let workerKernels = null;
    if (gpu.ok && useGpu) {
      workerInit = await call('init');
      await call('load', { bytes: bytes.slice().buffer, preferGpu: true });
      // the core's policy for this adapter, as the worker gives it (www/worker.js init); BENCH_WIDEN overrides widening
      if (adapter?.architecture) core.gpu_note_architecture(adapter.architecture);
      if (widen !== undefined) core.set_gpu_widen16(widen === '1');
      await core.load_model(bytes, true);
      const defaults = core.gpu_kernels();
      out.widen16 = defaults.widen16;
      console.log('[bench] loaded; warming up');
      // warm-up: every pipeline compiled once
      for (const [, many, attn, norms] of prefillKinds) {
        setPrefill(many, attn, norms);
        core.gen_start(new Uint32Array(long), { max_new_tokens: 1 });
        await core.gen_next();
      }
      core.set_gpu_kernels({ many_rows: defaults.many_rows, attention: defaults.attention, norms: defaults.norms });
      for (const [, fused, few] of kernelSets) {
        core.set_gpu_kernels({ fused, few_rows: few, many_rows: defaults.many_rows });
        await generate({ max_new_tokens: 2 });
      }
      await workerGenerate(prompt, 2);
      for (let r = 0; r < reps; r++) {
        for (const [name, fused, few, k] of decodeVariants) {
          core.set_gpu_kernels({ fused, few_rows: few, many_rows: defaults.many_rows });
          const c0 = core.gpu_kernels();
          const t0 = performance.now();
          const ids = await generate({ tokens_per_submit: k });
          const dt = performance.now() - t0;
          console.log(`[bench] ${name}: ${(tokens / (dt / 1000)).toFixed(1)} tok/s`);
          const c1 = core.gpu_kernels();
          best(out.decode, name, tokens / (dt / 1000), (a, b) => a > b);
          out.dispatches_per_token[name] = (c1.dispatches - c0.dispatches) / tokens;
          out.submits_per_token[name] = (c1.submits - c0.submits) / tokens;
          out.ids[name] = ids;
        }
        for (const [kind, many, attn, norms] of prefillKinds) {
          setPrefill(many, attn, norms);
          core.gen_start(new Uint32Array(long), { max_new_tokens: 1 });
          const t0 = performance.now();
          const t = await core.gen_next();
          best(out.prefill_128_ms, kind, performance.now() - t0, (a, b) => a < b);
          out.prefill_token[kind] = t?.id;
          console.log(`[bench] prefill ${kind}: ${(performance.now() - t0).toFixed(0)} ms`);
        }
        core.set_gpu_kernels({ many_rows: defaults.many_rows, attention: defaults.attention, norms: defaults.norms });
        {
          const t0 = performance.now();
          const { ids, k } = await workerGenerate(prompt, tokens);
          best(out.decode, 'worker', tokens / ((performance.now() - t0) / 1000), (a, b) => a > b);
          console.log(`[bench] worker: ${(tokens / ((performance.now() - t0) / 1000)).toFixed(1)} tok/s, K up to ${k}`);
          out.ids.worker = ids;
          out.worker_largest_k = k;
          if (prefill) {
            const t1 = performance.now();
            await workerGenerate(long, 1);
            best(out.prefill_128_ms, 'worker', performance.now() - t1, (a, b) => a < b);
          }
        }
      }
      workerKernels = await call('gpuKernels');
      // sampling options with the worker's kernels, K = 1
      core.set_gpu_kernels({ fused: workerKernels.fused, few_rows: workerKernels.few_rows, many_rows: workerKernels.many_rows });
      for (const [name, opts] of [['temperature_top_k', { temperature: 0.8, top_k: 40 }], ['top10_candidates', { temperature: 0.8, top: 10 }], ['attention_rows', { attention: true }]]) {
        const t0 = performance.now();
        await generate(opts);
        out.decode[`options_${name}`] = tokens / ((performance.now() - t0) / 1000);
      }
    }
    await core.load_model(bytes, false);
    await generate({});
    for (let r = 0; r < reps; r++) {
      const t0 = performance.now();
      out.ids.cpu = await generate({});
      best(out.decode, 'cpu', tokens / ((performance.now() - t0) / 1000), (a, b) => a > b);
    }
    worker.terminate();
    // the CPU path through the worker(s), interleaved within each repetition
    out.worker_cpu_token_messages = {};
    const cpuWorkers = [];
    for (const url of workerUrls) {
      const w = spawn(url);
      await w.call('init');
      await w.call('load', { bytes: bytes.slice().buffer, preferGpu: false });
      await w.generate(prompt, 2);
      cpuWorkers.push({ name: url === workerUrls[0] ? 'worker_cpu' : `worker_cpu:${url.split('/').pop()}`, ...w });
    }
    for (let r = 0; r < reps; r++) {
      for (const w of cpuWorkers) {
        const t0 = performance.now();
        const { ids, messages } = await w.generate(prompt, tokens);
        const tps = tokens / ((performance.now() - t0) / 1000);
        console.log(`[bench] ${w.name}: ${tps.toFixed(1)} tok/s, ${messages} token messages`);
        best(out.decode, w.name, tps, (a, b) => a > b);
        out.ids[w.name] = ids;
        out.worker_cpu_token_messages[w.name] = messages;
      }
    }
    for (const w of cpuWorkers) w.worker.terminate();
    const round = (o) => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, Math.round(v * 10) / 10]));
    const same = Object.values(out.ids).every((ids) => JSON.stringify(ids) === JSON.stringify(out.ids.cpu));
    return {
      adapter: gpu.ok ? { vendor: adapter?.vendor, architecture: adapter?.architecture } : `none (${gpu.error})`,
      worker_adapter: workerInit?.browserAdapter ?? null,
      worker_kernels: workerKernels,
      widen16: out.widen16,
      worker_largest_k: out.worker_largest_k,
      worker_cpu_token_messages: out.worker_cpu_token_messages,
      decode_tokens_per_second: round(out.decode),
      prefill_128_ms: round(out.prefill_128_ms),
      // the token after the 128-token prompt per prefill kernel set: all equal (greedy)
      prefill_token: out.prefill_token,
      prefill_same_token: new Set(Object.values(out.prefill_token)).size <= 1,
      dispatches_per_token: out.dispatches_per_token,
      submits_per_token: out.submits_per_token,
      same_ids: same,
      different_ids: Object.keys(out.ids).filter((k) => JSON.stringify(out.ids[k]) !== JSON.stringify(out.ids.cpu)),
    };
  }, { model, tokens, reps, ks, prefill, prefillNames, sets, useGpu, workerUrls, widen });
  ok = result.same_ids && result.prefill_same_token && pageErrors.length === 0;
  console.log(JSON.stringify({ bench: 'browser generate', model, tokens, reps, chromium: browser.version(), page_errors: pageErrors, ...result }, null, 2));
} finally {
  await browser.close();
  srv.close();
}
process.exit(ok ? 0 : 1);
