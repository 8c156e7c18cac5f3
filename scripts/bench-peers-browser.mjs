// The browser half of scripts/bench-peers.sh: tinyformer's wasm CPU path (the fast backend, simd128)
// in headless Chromium on the peer workload, as JSON: per model, greedy decode tok/s of 64 new tokens
// after a 16-token prompt (KV cache; tok/s = 64 / the whole generation, prompt pass included) and a
// 128-token prefill in ms (one gen_next over a 128-token prompt), on the ids of models/<name>.json's
// eval slice, best of BENCH_REPS (default 5) after a warm-up (V8 tiers wasm up over the first seconds).
// The onnxruntime-web peer is not here yet (BENCHMARKS.md says why).
//   node scripts/bench-peers-browser.mjs models/shakespeare-gpt.safetensors ...
import fs from 'node:fs';
import { chromium } from 'playwright-core';
import { startServer } from './serve.mjs';

const models = process.argv.slice(2);
const reps = Number(process.env.BENCH_REPS ?? 5);
const root = new URL('..', import.meta.url).pathname;
const srv = await startServer({ root, port: 0 });
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage();
  await page.goto(`${srv.url}index.html?nomodel=1`);
  const out = {};
  for (const model of models) {
    const ids = JSON.parse(fs.readFileSync(model.replace('.safetensors', '.json'), 'utf8')).eval_slice.ids;
    const name = model.split('/').pop().replace('.safetensors', '');
    out[name] = await page.evaluate(async ({ model, ids, reps }) => {
      const core = await import('/www/pkg/tinyformer.js');
      await core.default();
      const bytes = new Uint8Array(await (await fetch(`/${model}`)).arrayBuffer());
      const card = await core.load_model(bytes, false);
      const generate = async () => {
        core.gen_start(new Uint32Array(ids.slice(0, 16)), { max_new_tokens: 64 });
        const got = [];
        for (;;) {
          const t = await core.gen_next();
          if (!t || t.id === undefined) break;
          got.push(t.id);
          if (t.done) break;
        }
        return got;
      };
      const prefill = async () => {
        core.gen_start(new Uint32Array(ids.slice(0, 128)), { max_new_tokens: 1 });
        return (await core.gen_next()).id;
      };
      // warm-up: about two seconds of work
      const w0 = performance.now();
      while (performance.now() - w0 < 2000) await generate();
      let best = Infinity, bestPre = Infinity, got = [], pre = 0;
      for (let r = 0; r < reps; r++) {
        let t = performance.now();
        got = await generate();
        best = Math.min(best, performance.now() - t);
        t = performance.now();
        pre = await prefill();
        bestPre = Math.min(bestPre, performance.now() - t);
      }
      return { backend: card.backend, decode_tokens_per_second: 64 / (best / 1000), prefill_128_ms: bestPre, ids: got, prefill_argmax: pre };
    }, { model, ids, reps });
  }
  console.log(JSON.stringify({ bench: 'browser_cpu', chromium: browser.version(), models: out }, null, 1));
} finally {
  await browser.close();
  srv.close();
}
