// The browser half of scripts/bench-peers.sh, as JSON. In one headless Chromium page, per model, on the ids of
// models/<name>.json's eval slice:
//   tinyformer_wasm_cpu     the wasm core's CPU path (the fast backend) in the build the page loads here:
//                           www/pkg-relaxed (relaxed SIMD) where the browser validates it, else www/pkg
//   tinyformer_wasm_cpu_simd128  the plain simd128 build (www/pkg), when the first is the relaxed one
//   ort_wasm_1thread        onnxruntime-web's wasm EP, ort.env.wasm.numThreads = 1
//   ort_webgpu              onnxruntime-web's webgpu EP (SwiftShader here: Vulkan on the CPU); where it fails
//                           to start, the error is recorded instead
//   tinyformer_webgpu       the page's WebGPU path: www/worker.js itself, driven as the page drives it ('load'
//                           with preferGpu, which picks the kernels for the adapter; 'generate', which adapts
//                           the tokens per submission), its kernels and largest K in the output
//                           (BENCH_WEBGPU=0 leaves both WebGPU engines out)
// Workload: greedy decode of 64 new tokens after a 16-token prompt with the KV cache, tok/s = 64 / the whole
// generation (prompt pass included), and a 128-token prefill from an empty cache in ms. The CPU engines are
// warmed up for about two seconds each (V8 tiers wasm up over the first seconds), then timed best of
// BENCH_REPS (default 5) with the engines interleaved within each repetition, so that the load of a shared
// machine falls on all of them alike; the WebGPU engines run after them, best of BENCH_GPU_REPS (default 1)
// after a short warm-up (a 4-token generation and a prefill: enough to compile their pipelines).
// The onnxruntime-web graphs are train/export_onnx.py's (ONNX_DIR, default bench-out/onnx): a prefill graph
// and a decode graph with past K/V inputs and argmax inside; its runtime and wasm files are served from
// node_modules/onnxruntime-web/dist by the bench's own server (nothing is fetched from elsewhere: every
// request to another origin is counted and makes the script fail).
//   node scripts/bench-peers-browser.mjs models/shakespeare-gpt.safetensors ...
import fs from 'node:fs';
import { chromium } from 'playwright-core';
import { startServer } from './serve.mjs';

const models = process.argv.slice(2);
const reps = Number(process.env.BENCH_REPS ?? 5);
const gpuReps = Number(process.env.BENCH_GPU_REPS ?? 1);
const webgpu = process.env.BENCH_WEBGPU !== '0';
const onnxDir = (process.env.ONNX_DIR ?? 'bench-out/onnx').replace(/\/+$/, '');
const ORT_DIST = 'node_modules/onnxruntime-web/dist';
const root = new URL('..', import.meta.url).pathname;
const ortVersion = fs.existsSync(`${root}/node_modules/onnxruntime-web/package.json`)
  ? JSON.parse(fs.readFileSync(`${root}/node_modules/onnxruntime-web/package.json`, 'utf8')).version
  : null;

const haveRelaxed = fs.existsSync(`${root}/www/pkg-relaxed/tinyformer_bg.wasm`);
// www/worker.js's probe: a module doing one f32x4.relaxed_madd
const RELAXED_SIMD_PROBE = [0, 97, 115, 109, 1, 0, 0, 0, 1, 8, 1, 96, 3, 123, 123, 123, 1, 123, 3, 2, 1, 0,
  10, 13, 1, 11, 0, 32, 0, 32, 1, 32, 2, 253, 133, 2, 11];

const srv = await startServer({ root, port: 0, extraPaths: [onnxDir, ORT_DIST] });
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--enable-unsafe-webgpu', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
let failed = false;
try {
  const page = await browser.newPage();
  const origin = new URL(srv.url).origin;
  const foreign = [];
  page.on('request', (req) => {
    const u = req.url();
    if (!u.startsWith('data:') && !u.startsWith('blob:') && new URL(u).origin !== origin) foreign.push(u);
  });
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  await page.goto(`${srv.url}index.html?nomodel=1`);
  const out = {};
  for (const model of models) {
    const ids = JSON.parse(fs.readFileSync(model.replace('.safetensors', '.json'), 'utf8')).eval_slice.ids;
    const name = model.split('/').pop().replace('.safetensors', '');
    const onnx = {
      prefill: `${onnxDir}/${name}.prefill.onnx`,
      decode: `${onnxDir}/${name}.decode.onnx`,
    };
    const haveOnnx = ortVersion && fs.existsSync(`${root}/${onnx.prefill}`) && fs.existsSync(`${root}/${onnx.decode}`);
    out[name] = await page.evaluate(async ({ model, ids, reps, gpuReps, webgpu, onnx, haveOnnx, ortDist, haveRelaxed, probe }) => {
      const plainCore = await import('/www/pkg/tinyformer.js');
      await plainCore.default();
      const relaxed = haveRelaxed && WebAssembly.validate(new Uint8Array(probe));
      const core = relaxed ? await import('/www/pkg-relaxed/tinyformer.js') : plainCore;
      if (relaxed) await core.default();
      const bytes = new Uint8Array(await (await fetch(`/${model}`)).arrayBuffer());
      const prompt = ids.slice(0, 16);
      const long = ids.slice(0, 128);

      // --- engines: {generate() -> 64 ids, prefill() -> argmax of the last row}
      const tinyformer = async (onGpu, core) => {
        const card = await core.load_model(bytes, onGpu);
        return {
          backend: card.backend,
          isa: core.cpu_isa(),
          generate: async (n = 64) => {
            core.gen_start(new Uint32Array(prompt), { max_new_tokens: n });
            const got = [];
            for (;;) {
              const t = await core.gen_next();
              if (!t || t.id === undefined) break;
              got.push(t.id);
              if (t.done) break;
            }
            return got;
          },
          prefill: async () => {
            core.gen_start(new Uint32Array(long), { max_new_tokens: 1 });
            return (await core.gen_next()).id;
          },
        };
      };
      // The page's WebGPU path: its own worker (www/worker.js), which picks the kernels for this adapter at
      // load and adapts the tokens per submission (K) while it generates, exactly as for the page's Generate.
      const pageWorker = async () => {
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
        const close = () => worker.terminate();
        const init = await call('init');
        if (!init.gpu?.ok) return { error: `no WebGPU adapter: ${init.gpu?.error}`, close };
        const card = await call('load', { bytes: bytes.slice().buffer, preferGpu: true });
        let largest = 0;
        const gen = async (ids, n) => {
          const got = [];
          const res = await call('generate', { ids, opts: { max_new_tokens: n, temperature: 0, kv_cache: true } }, (ev) => {
            if (ev.kind === 'tokens') got.push(...ev.steps.map((t) => t.id));
          });
          largest = Math.max(largest, res.tokensPerSubmit ?? 1);
          return got;
        };
        return {
          backend: card.backend,
          adapter: init.browserAdapter,
          kernels: await call('gpuKernels'),
          kernelsNow: () => call('gpuKernels'),
          largestK: () => largest,
          close,
          generate: (n = 64) => gen(prompt, n),
          prefill: async () => (await gen(long, 1))[0],
        };
      };
      const ortEngine = async (ort, ep) => {
        const base = { executionProviders: [ep], graphOptimizationLevel: 'all' };
        const pre0 = await ort.InferenceSession.create(`/${onnx.prefill}`, base);
        const presents = pre0.outputNames.filter((n) => n.startsWith('present_'));
        let pre = pre0;
        let dec;
        if (ep === 'webgpu') {
          // keep the K/V on the GPU between steps (as a WebGPU app would); ids and logits come back
          const loc = Object.fromEntries(presents.map((n) => [n, 'gpu-buffer']));
          await pre0.release();
          pre = await ort.InferenceSession.create(`/${onnx.prefill}`, { ...base, preferredOutputLocation: loc });
          dec = await ort.InferenceSession.create(`/${onnx.decode}`, { ...base, preferredOutputLocation: loc });
        } else {
          dec = await ort.InferenceSession.create(`/${onnx.decode}`, base);
        }
        const i64 = (a, dims) => new ort.Tensor('int64', BigInt64Array.from(a, BigInt), dims);
        const release = (r) => {
          for (const n of presents) r[n].dispose();
        };
        return {
          generate: async (n = 64) => {
            let r = await pre.run({ ids: i64(prompt, [1, prompt.length]) });
            const got = [Number((await r.next_id.getData())[0])];
            for (let pos = prompt.length; got.length < n; pos++) {
              const feed = { ids: i64([got[got.length - 1]], [1, 1]), position: i64([pos], [1]) };
              for (const n of presents) feed[n.replace('present_', 'past_')] = r[n];
              const next = await dec.run(feed);
              release(r);
              r = next;
              got.push(Number((await r.next_id.getData())[0]));
            }
            release(r);
            return got;
          },
          prefill: async () => {
            const r = await pre.run({ ids: i64(long, [1, long.length]) });
            const id = Number((await r.next_id.getData())[0]);
            release(r);
            return id;
          },
        };
      };

      // --- timing
      const time = async (engine, res) => {
        let t = performance.now();
        const got = await engine.generate();
        const dt = performance.now() - t;
        t = performance.now();
        const pre = await engine.prefill();
        const dp = performance.now() - t;
        res.decode_ms = Math.min(res.decode_ms ?? Infinity, dt);
        res.prefill_128_ms = Math.min(res.prefill_128_ms ?? Infinity, dp);
        res.ids = got;
        res.prefill_argmax = pre;
      };
      // CPU engines: whole generations for about `ms`; WebGPU engines (ms = 0): one 4-token generation
      // and one prefill, which compile every pipeline (a whole generation takes minutes on SwiftShader)
      const warm = async (engine, ms) => {
        if (ms === 0) {
          await engine.generate(4);
          await engine.prefill();
          return;
        }
        const w0 = performance.now();
        do await engine.generate(); while (performance.now() - w0 < ms);
      };
      const finish = (res) => {
        if (res.decode_ms === undefined) return res;
        const { decode_ms, ...rest } = res;
        return { ...rest, decode_tokens_per_second: 64 / (decode_ms / 1000) };
      };

      const engines = {};
      const results = {};
      const ours = await tinyformer(false, core);
      engines.tinyformer_wasm_cpu = ours;
      results.tinyformer_wasm_cpu = { backend: ours.backend, isa: ours.isa };
      if (relaxed) {
        const plain = await tinyformer(false, plainCore);
        engines.tinyformer_wasm_cpu_simd128 = plain;
        results.tinyformer_wasm_cpu_simd128 = { backend: plain.backend, isa: plain.isa };
      }
      let ort = null;
      if (haveOnnx) {
        // the plain wasm build for the wasm EP; the bundle with the WebGPU EP for webgpu
        ort = await import(`/${ortDist}/ort.wasm.min.mjs`);
        ort.env.wasm.numThreads = 1;
        ort.env.wasm.proxy = false;
        ort.env.wasm.wasmPaths = `/${ortDist}/`;
        try {
          engines.ort_wasm_1thread = await ortEngine(ort, 'wasm');
          results.ort_wasm_1thread = { ep: 'wasm', threads: ort.env.wasm.numThreads };
        } catch (e) {
          results.ort_wasm_1thread = { error: String(e) };
        }
      }
      for (const e of Object.values(engines)) await warm(e, 2000);
      for (let r = 0; r < reps; r++) {
        for (const [n, e] of Object.entries(engines)) await time(e, results[n]);
      }

      if (webgpu) {
        try {
          const e = await pageWorker();
          if (e.error) {
            results.tinyformer_webgpu = { error: e.error };
          } else {
            results.tinyformer_webgpu = { backend: e.backend, adapter: e.adapter, kernels: e.kernels };
            await warm(e, 0);
            for (let r = 0; r < gpuReps; r++) await time(e, results.tinyformer_webgpu);
            results.tinyformer_webgpu.largest_tokens_per_submit = e.largestK();
            results.tinyformer_webgpu.kernels = await e.kernelsNow();
          }
          e.close();
        } catch (e) {
          results.tinyformer_webgpu = { error: String(e?.message ?? e) };
        }
        if (haveOnnx) {
          try {
            if (!navigator.gpu) throw new Error('navigator.gpu is undefined');
            const ortAll = await import(`/${ortDist}/ort.min.mjs`);
            ortAll.env.wasm.numThreads = 1;
            ortAll.env.wasm.proxy = false;
            ortAll.env.wasm.wasmPaths = `/${ortDist}/`;
            const e = await ortEngine(ortAll, 'webgpu');
            results.ort_webgpu = { ep: 'webgpu' };
            await warm(e, 0);
            for (let r = 0; r < gpuReps; r++) await time(e, results.ort_webgpu);
          } catch (e) {
            results.ort_webgpu = { error: String(e?.message ?? e) };
          }
        }
      } else {
        results.tinyformer_webgpu = { skipped: 'BENCH_WEBGPU=0' };
        if (haveOnnx) results.ort_webgpu = { skipped: 'BENCH_WEBGPU=0' };
      }
      if (!haveOnnx) {
        results.onnxruntime_web = 'skipped: no ONNX graphs (python3 train/export_onnx.py) or no node_modules/onnxruntime-web (npm ci)';
      }
      return Object.fromEntries(Object.entries(results).map(([k, v]) => [k, typeof v === 'object' ? finish(v) : v]));
    }, { model, ids, reps, gpuReps, webgpu, onnx, haveOnnx, ortDist: ORT_DIST, haveRelaxed, probe: RELAXED_SIMD_PROBE });

    // same ids and ratios, within this run
    const r = out[name];
    const ours = r.tinyformer_wasm_cpu;
    const ran = Object.entries(r).filter(([, v]) => v && v.ids);
    r.same_ids = ran.every(([, v]) => JSON.stringify(v.ids) === JSON.stringify(ours.ids) && v.prefill_argmax === ours.prefill_argmax);
    r.different_ids = ran.filter(([, v]) => JSON.stringify(v.ids) !== JSON.stringify(ours.ids) || v.prefill_argmax !== ours.prefill_argmax).map(([k]) => k);
    const ratio = (a, b) => {
      if (!a?.ids || !b?.ids) return undefined;
      return { decode: a.decode_tokens_per_second / b.decode_tokens_per_second, prefill_128: b.prefill_128_ms / a.prefill_128_ms };
    };
    r.ratios = Object.fromEntries(Object.entries({
      tinyformer_wasm_cpu_over_ort_wasm_1thread: ratio(ours, r.ort_wasm_1thread),
      tinyformer_wasm_cpu_simd128_over_ort_wasm_1thread: ratio(r.tinyformer_wasm_cpu_simd128, r.ort_wasm_1thread),
      tinyformer_wasm_cpu_over_tinyformer_wasm_cpu_simd128: ratio(ours, r.tinyformer_wasm_cpu_simd128),
      tinyformer_wasm_cpu_over_ort_webgpu: ratio(ours, r.ort_webgpu),
      tinyformer_webgpu_over_ort_webgpu: ratio(r.tinyformer_webgpu, r.ort_webgpu),
      tinyformer_wasm_cpu_over_tinyformer_webgpu: ratio(ours, r.tinyformer_webgpu),
    }).filter(([, v]) => v));
    if (!r.same_ids) failed = true;
  }
  if (foreign.length) failed = true;
  console.log(JSON.stringify({
    bench: 'browser_peers', chromium: browser.version(), onnxruntime_web: ortVersion,
    workload: 'batch 1, greedy, KV cache, 64 new tokens after a 16-token prompt; prefill of 128 tokens; 1 thread',
    reps, gpu_reps: gpuReps, foreign_requests: foreign, page_errors: pageErrors, models: out,
  }, null, 1));
} finally {
  await browser.close();
  srv.close();
}
process.exit(failed ? 1 : 0);
