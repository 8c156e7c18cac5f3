// Generation speed in headless Chromium, as JSON: the wasm core on WebGPU (SwiftShader on machines
// without a GPU) and on its CPU path, per sampling option, for one shipped model.
//   node scripts/bench-browser.mjs [models/shakespeare-llama.safetensors] [tokens]
// Needs the wasm build (scripts/build-wasm.sh) and playwright-core (npm ci).
import { chromium } from 'playwright-core';
import { startServer } from './serve.mjs';

const model = process.argv[2] ?? 'models/shakespeare-llama.safetensors';
const tokens = Number(process.argv[3] ?? 16);
const root = new URL('..', import.meta.url).pathname;
const srv = await startServer({ root, port: 0 });
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--enable-unsafe-webgpu', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage();
  await page.goto(`${srv.url}index.html?nomodel=1`);
  const result = await page.evaluate(async ({ model, tokens }) => {
    const core = await import('/www/pkg/tinyformer.js');
    await core.default();
    const gpu = await core.gpu_init();
    const bytes = new Uint8Array(await (await fetch(`/${model}`)).arrayBuffer());
    const variants = [
      ['webgpu_greedy', true, {}],
      // the decode loop before issue 12 (no fused kernels, one thread per output for one-row
      // matmuls), and each change alone
      ['webgpu_greedy_unfused_naive', true, {}, [false, 'naive']],
      ['webgpu_greedy_unfused_gemv', true, {}, [false, 'gemv']],
      ['webgpu_greedy_fused_naive', true, {}, [true, 'naive']],
      ['webgpu_temperature_top_k', true, { temperature: 0.8, top_k: 40 }],
      ['webgpu_top10_candidates', true, { temperature: 0.8, top: 10 }],
      ['webgpu_attention_rows', true, { attention: true }],
      ['cpu_greedy', false, {}],
    ];
    const out = {};
    for (const [name, onGpu, opts, kernels] of variants) {
      if (onGpu && !gpu.ok) continue;
      await core.load_model(bytes, onGpu);
      if (kernels) core.set_gpu_kernels(...kernels);
      core.gen_start(new Uint32Array([5, 6, 7]), { max_new_tokens: tokens + 1, ...opts });
      await core.gen_next(); // prefill and first-use costs
      const t0 = performance.now();
      for (let i = 0; i < tokens; i++) await core.gen_next();
      out[`${name}_tokens_per_second`] = Math.round((tokens / ((performance.now() - t0) / 1000)) * 10) / 10;
    }
    return { adapter: gpu.ok ? 'webgpu' : `none (${gpu.error})`, results: out };
  }, { model, tokens });
  console.log(JSON.stringify({ bench: 'browser generate', model, tokens, chromium: browser.version(), ...result }, null, 2));
} finally {
  await browser.close();
  srv.close();
}
