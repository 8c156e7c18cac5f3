// The training lab's goal figure, as JSON: from pressing Train on the induction preset (its defaults) to an
// induction score >= 0.4 on a head of the last layer (the Inspect view's detector, which the page measures every
// 50 steps), on the page's wasm CPU path and on WebGPU (SwiftShader where there is no GPU), driven from the
// page's own controls in headless Chromium.
//   node scripts/bench-lab.mjs            BENCH_LAB_PATHS=cpu,gpu (default cpu), BENCH_LAB_LIMIT_S=240
// Prints {path, seconds, step, score, tokens_per_s, formed} per path; `formed: false` when the run reached its
// last step (or the limit) first. Needs the wasm build (scripts/build-wasm.sh) and playwright-core (npm ci).
import { setup, openPage } from '../tests/browser/_harness.mjs';

const paths = (process.env.BENCH_LAB_PATHS ?? 'cpu').split(',');
const limitS = Number(process.env.BENCH_LAB_LIMIT_S ?? 240);

const env = await setup({ webgpu: true });
const out = { date: new Date().toISOString(), preset: 'induction', threshold: 0.4, runs: [] };
try {
  for (const path of paths) {
    const { page, context } = await openPage(env, `index.html?nomodel=1&backend=${path}`);
    try {
      await page.waitForSelector('#train-memory[data-total]:not([data-total=""])', { timeout: 60_000 });
      await page.selectOption('#train-preset', 'induction');
      const t0 = Date.now();
      await page.click('#train-start');
      await page.waitForFunction(() => {
        const d = document.querySelector('#train-status').dataset;
        return Number(d.induction) >= 0.4 || d.state === 'done' || d.state === 'error';
      }, null, { timeout: limitS * 1000, polling: 100 }).catch(() => {});
      const seconds = (Date.now() - t0) / 1000;
      const d = await page.evaluate(() => ({ ...document.querySelector('#train-status').dataset }));
      await page.click('#train-stop').catch(() => {});
      out.runs.push({
        path: d.backend || path, seconds, step: Number(d.step), score: Number(d.induction),
        tokens_per_s: Number(d.tokensPerS), formed: Number(d.induction) >= 0.4,
      });
    } finally {
      await context.close();
    }
  }
} finally {
  await env.close();
}
console.log(JSON.stringify(out, null, 1));
