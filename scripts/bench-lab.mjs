// The training lab's goal figure, as JSON: from pressing Train on the induction preset (its defaults) to an
// induction score >= 0.4 on a head of the last layer (the Inspect view's detector, which the page measures every
// 50 steps), on the page's wasm CPU path and on WebGPU (SwiftShader where there is no GPU), driven from the
// page's own controls in headless Chromium.
//   node scripts/bench-lab.mjs            BENCH_LAB_PATHS=cpu,gpu (default cpu), BENCH_LAB_LIMIT_S=240
// Prints {path, seconds, step, score, tokens_per_s, formed} per path (`formed: false` when the run reached its
// last step, or the limit, first), and `views`: the live views' cost (below). Needs the wasm build (scripts/build-wasm.sh) and playwright-core (npm ci).
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
// The live views' cost: the same run of BENCH_LAB_STEPS steps (default 600) with the probe on and off, wall time
// from Train to done, interleaved, best of BENCH_REPS (default 2) each.
const steps = Number(process.env.BENCH_LAB_STEPS ?? 600);
const reps = Number(process.env.BENCH_REPS ?? 2);
if (steps > 0) {
  const env2 = await setup({ webgpu: true });
  const best = { shown: Infinity, hidden: Infinity };
  try {
    for (let r = 0; r < reps; r++) {
      for (const live of ['shown', 'hidden']) {
        const { page, context } = await openPage(env2, 'index.html?nomodel=1&backend=cpu');
        try {
          await page.waitForSelector('#train-memory[data-total]:not([data-total=""])', { timeout: 60_000 });
          await page.selectOption('#train-preset', 'induction');
          await page.fill('#train-steps', String(steps));
          await page.setChecked('#train-live', live === 'shown');
          await page.waitForFunction((n) => document.querySelector('#train-cli')?.textContent.includes(`--steps ${n}`), steps);
          const t0 = Date.now();
          await page.click('#train-start');
          await page.waitForSelector('#train-status[data-state="done"]', { timeout: 600_000 });
          best[live] = Math.min(best[live], (Date.now() - t0) / 1000);
        } finally {
          await context.close();
        }
      }
    }
  } finally {
    await env2.close();
  }
  out.views = { steps, seconds_shown: best.shown, seconds_hidden: best.hidden, cost: best.shown / best.hidden - 1 };
}
console.log(JSON.stringify(out, null, 1));
