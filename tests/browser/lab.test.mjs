// The training lab (www/views/train.js), driven from its controls as a learner would: the induction preset,
// at test sizes, trains to its last step on the wasm CPU path and on WebGPU (SwiftShader here); its loss falls,
// and the loss of step 100's batch matches `tinyformer train`'s for the same settings and seed (the CLI's run,
// recorded in tests/fixtures/lab/induction_small.json with the command that made it; the page shows the same
// command). Pause / Resume gives the same losses as an uninterrupted run; the trained model downloads as a
// checkpoint and becomes the page's model; text that cannot be trained on is refused in one line while the page
// keeps working. The live sample's temperature re-samples a paused model at once (greedy at 0, the same sample
// for the same step and temperature) and fits a phone's width.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { setup, openPage, assertClean, SHOT_DIR } from './_harness.mjs';

const FIXTURE = JSON.parse(fs.readFileSync(new URL('../fixtures/lab/induction_small.json', import.meta.url), 'utf8'));
// The test sizes (the fixture's command has the same): small enough for SwiftShader on 2 cores.
const SIZES = { layers: 2, heads: 2, dim: 32, context: 16, vocab: 16, batch: 8, lr: 0.003, steps: 120, seed: 7 };

let env;
before(async () => {
  env = await setup({ webgpu: true });
});
after(async () => {
  await env?.close();
});

async function openLab(backend) {
  const opened = await openPage(env, `index.html?nomodel=1&backend=${backend}`);
  await opened.page.waitForSelector('#train-memory[data-total]:not([data-total=""])', { timeout: 60_000 });
  return opened;
}

async function setSizes(page) {
  await page.selectOption('#train-preset', 'induction');
  await page.waitForSelector('#train-vocab');
  for (const [k, v] of Object.entries(SIZES)) await page.fill(`#train-${k}`, String(v));
  await page.waitForFunction((cmd) => document.querySelector('#train-cli')?.textContent === cmd, FIXTURE.command, { timeout: 20_000 });
}

const status = (page) => page.evaluate(() => ({ ...document.querySelector('#train-status').dataset }));

/** Clicks `button` (Train or Resume) and Pause as soon as the run is running: the worker gets trainPause right
 * after trainRun, so the run pauses after its first chunk however fast the path is. */
async function startThenPause(page, button) {
  await page.evaluate((sel) => new Promise((resolve) => {
    const st = document.querySelector('#train-status');
    const obs = new MutationObserver(() => {
      if (st.dataset.state !== 'running') return;
      obs.disconnect();
      document.querySelector('#train-pause').click();
      resolve();
    });
    obs.observe(st, { attributes: true, attributeFilter: ['data-state'] });
    document.querySelector(sel).click();
  }), button);
  await page.waitForSelector('#train-status[data-state="paused"]', { timeout: 60_000 });
  return Number((await status(page)).step);
}

/** Trains to the end; with `pauses`, pauses that many times on the way (each after one chunk) and resumes. */
async function train(page, { pauses = 0 } = {}) {
  const t0 = Date.now();
  if (pauses) {
    let at = await startThenPause(page, '#train-start');
    for (let i = 1; i < pauses; i++) {
      await page.waitForTimeout(100);
      assert.equal(Number((await status(page)).step), at, 'no step is taken while paused');
      const next = await startThenPause(page, '#train-pause'); // Resume, then Pause again
      assert.ok(next > at, `a resumed run goes on (${at} -> ${next})`);
      at = next;
    }
    assert.ok(at < SIZES.steps, `paused before the end (step ${at})`);
    await page.click('#train-pause'); // Resume
  } else {
    await page.click('#train-start');
  }
  await page.waitForSelector('#train-status[data-state="done"]', { timeout: 180_000 });
  const s = await status(page);
  return { ...s, seconds: (Date.now() - t0) / 1000 };
}

function checkRun(where, s) {
  assert.equal(Number(s.step), SIZES.steps, `${where}: every step taken`);
  const l100 = Number(s['loss-100'] ?? s.loss_100 ?? NaN);
  assert.ok(Number.isFinite(l100), `${where}: data-loss-100 is set`);
  const rel = Math.abs(l100 - FIXTURE.loss_100) / FIXTURE.loss_100;
  assert.ok(rel <= 0.005, `${where}: loss at step 100 ${l100} vs the CLI's ${FIXTURE.loss_100} (${(rel * 100).toFixed(3)}%)`);
  assert.ok(Number(s.loss) < 0.9 * Number(s.lossFirst), `${where}: the loss falls below its start (uniform over the 16 tokens: 2.77) (${s.lossFirst} -> ${s.loss})`);
  const ind = Number(s.induction);
  assert.ok(ind >= 0 && ind <= 1, `${where}: an induction score (${s.induction})`);
  assert.ok(Number(s.tokensPerS) > 0, `${where}: tokens per second`);
  console.log(`${where}: ${SIZES.steps} steps in ${s.seconds.toFixed(1)} s, loss ${Number(s.lossFirst).toFixed(3)} -> ${Number(s.loss).toFixed(3)}, ` +
    `step 100 ${l100.toFixed(5)} (CLI ${FIXTURE.loss_100.toFixed(5)}, ${(rel * 100).toFixed(4)}%), ${s.tokensPerS} tokens/s, induction ${ind.toFixed(3)}`);
}

test('the induction preset trains on the wasm CPU path as the CLI does; pause and resume change nothing; its model downloads and loads', { timeout: 240_000 }, async () => {
  const { page, context, log } = await openLab('cpu');
  try {
    await setSizes(page);
    const straight = await train(page);
    assert.equal(straight.backend, 'cpu');
    checkRun('wasm CPU', straight);
    const paused = await train(page, { pauses: 3 });
    assert.equal(paused['loss-100'] ?? paused.loss_100, straight['loss-100'] ?? straight.loss_100, 'the same loss at step 100 after a pause');
    assert.equal(paused.loss, straight.loss, 'the same last loss after a pause');
    // the trained model downloads as a checkpoint and becomes the page's model
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#train-download')]);
    assert.match(download.suggestedFilename(), /\.safetensors$/);
    const bytes = fs.readFileSync(await download.path());
    assert.ok(bytes.length > 8 && bytes.subarray(8, 9).toString() === '{', 'a safetensors file');
    await page.click('#train-use');
    await page.waitForFunction(() => window.tinyformer?.state?.model?.meta?.id === 'trained-here', null, { timeout: 60_000 });
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});

test('a paused run is saved in the browser; after a reload it resumes from the save with its curves and ends as the CLI does', { timeout: 240_000 }, async () => {
  const { page, context, log } = await openLab('cpu');
  try {
    await setSizes(page);
    const at = await startThenPause(page, '#train-start');
    await page.waitForSelector(`#train-status[data-saved-step="${at}"]`, { timeout: 30_000 });
    const before = await status(page);
    await page.reload();
    await page.waitForSelector('#train-restore-banner:not([hidden])', { timeout: 60_000 });
    assert.match(await page.textContent('#train-restore-banner'), new RegExp(`Induction heads was saved at step ${at}`));
    await page.click('#train-restore');
    await page.waitForSelector('#train-status[data-state="paused"]', { timeout: 30_000 });
    const back = await status(page);
    assert.equal(back.step, String(at), 'the run comes back at its saved step');
    assert.equal(back.loss, before.loss, 'with its last loss');
    assert.equal(back.lossFirst, before.lossFirst, 'and its curve from step 1');
    await page.click('#train-pause'); // Resume
    await page.waitForSelector('#train-status[data-state="done"]', { timeout: 120_000 });
    const s = await status(page);
    const l100 = Number(s.loss_100 ?? s['loss-100']);
    assert.ok(Math.abs(l100 - FIXTURE.loss_100) <= 1e-7 * FIXTURE.loss_100, `step 100 after the reload: ${l100} vs the CLI's ${FIXTURE.loss_100}`);
    assert.ok(Math.abs(Number(s.loss) - FIXTURE.loss_120) <= 1e-7 * FIXTURE.loss_120, `the last step: ${s.loss} vs the CLI's ${FIXTURE.loss_120}`);
    console.log(`saved at step ${at}, reloaded, resumed: step 100 ${l100}, step 120 ${s.loss} (the CLI's ${FIXTURE.loss_100}, ${FIXTURE.loss_120})`);
    // Reset forgets the save: a reload offers nothing
    await page.click('#train-reset');
    await page.waitForSelector('#train-status[data-state="idle"]', { timeout: 20_000 });
    await page.reload();
    await page.waitForSelector('#train-memory[data-total]:not([data-total=""])', { timeout: 60_000 });
    await page.waitForTimeout(500);
    assert.equal(await page.isHidden('#train-restore-banner'), true, 'nothing saved after Reset');
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});

test('the induction preset at its defaults grows an induction head on the wasm CPU path, marked on the loss curve', { timeout: 300_000 }, async () => {
  const { page, context, log } = await openLab('cpu');
  try {
    await page.selectOption('#train-preset', 'induction');
    await page.waitForSelector('#train-vocab');
    const t0 = Date.now();
    await page.click('#train-start');
    // the page measures the Inspect view's score every 50 steps; wait for a head of the last layer at >= 0.4
    await page.waitForFunction(() => {
      const d = document.querySelector('#train-status').dataset;
      return Number(d.induction) >= 0.4 || d.state === 'done' || d.state === 'error';
    }, null, { timeout: 240_000, polling: 200 });
    const seconds = (Date.now() - t0) / 1000;
    const s = await status(page);
    await page.click('#train-stop');
    await page.waitForSelector('#train-status[data-state="done"]', { timeout: 20_000 });
    console.log(`induction preset, wasm CPU: score ${s.induction} at step ${s.step} after ${seconds.toFixed(1)} s ` +
      `(${s.tokensPerS} tokens/s; the issue's goal: 0.4 within 60 s)`);
    assert.ok(Number(s.induction) >= 0.4, `an induction head formed (score ${s.induction} at step ${s.step}, state ${s.state})`);
    // the step where it formed is marked on the charts
    assert.match(await page.textContent('#train-induction-chart'), /induction head at step \d+/);
    fs.mkdirSync(SHOT_DIR, { recursive: true });
    await page.locator('#view-train').screenshot({ path: path.join(SHOT_DIR, 'lab-induction-formed-1280.png') });
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});

test('the induction preset trains on WebGPU as the CLI does, and Stop ends a run at once', { timeout: 240_000 }, async () => {
  const { page, context, log } = await openLab('gpu');
  try {
    await setSizes(page);
    const s = await train(page);
    assert.equal(s.backend, 'gpu');
    checkRun('WebGPU', s);
    // Stop during a long run: answered within a chunk
    await page.fill('#train-steps', '5000');
    await page.click('#train-start');
    await page.waitForFunction(() => Number(document.querySelector('#train-status').dataset.step) >= 5, null, { timeout: 60_000 });
    const t0 = Date.now();
    await page.click('#train-stop');
    await page.waitForSelector('#train-status[data-state="done"]', { timeout: 10_000 });
    console.log(`WebGPU: Stop took ${Date.now() - t0} ms`);
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});

test('text that cannot be trained on is refused in one line, and the page keeps working', { timeout: 120_000 }, async () => {
  const { page, context, log } = await openLab('cpu');
  try {
    await page.selectOption('#train-preset', 'shakespeare');
    await page.check('#train-text-own');
    for (const [text, want] of [['', /empty/], ['aaaaaaaaaaaaaaaaaaaa', /one symbol/]]) {
      await page.fill('#train-text', text);
      await page.waitForFunction((re) => new RegExp(re).test(document.querySelector('#train-error')?.textContent ?? ''), want.source, { timeout: 20_000 });
      const err = await page.textContent('#train-error');
      assert.ok(!err.includes('\n') && err.length < 300, `one line: ${err}`);
      await page.click('#train-start');
      await page.waitForSelector('#train-status[data-state="error"]', { timeout: 20_000 });
      assert.match(await page.textContent('#train-error'), want);
    }
    // a file: not UTF-8 is refused in one line; a UTF-8 one is read (its bytes counted by the progress bar)
    await page.setInputFiles('#train-file', { name: 'latin1.txt', mimeType: 'text/plain', buffer: Buffer.from([0x63, 0x61, 0x66, 0xe9, 0x0a]) });
    await page.waitForFunction(() => /latin1\.txt is not UTF-8 text/.test(document.querySelector('#train-error')?.textContent ?? ''), null, { timeout: 20_000 });
    const poem = 'Shall I compare thee to a summer\u2019s day?\nThou art more lovely and more temperate.\n'.repeat(40);
    await page.setInputFiles('#train-file', { name: 'sonnet.txt', mimeType: 'text/plain', buffer: Buffer.from(poem, 'utf8') });
    await page.waitForFunction((n) => document.querySelector('#train-text').value.length === n, poem.length, { timeout: 20_000 });
    assert.equal(await page.getAttribute('#train-file-progress', 'data-read'), String(Buffer.byteLength(poem, 'utf8')));
    assert.equal(await page.isChecked('#train-text-own'), true, 'the file becomes the text to train on');
    // the shipped text plans, and the induction preset still trains
    await page.check('#train-text-shipped');
    await page.waitForFunction(() => /characters|parameters/.test(document.querySelector('#train-memory').textContent) && document.querySelector('#train-error').hidden, null, { timeout: 30_000 });
    await setSizes(page);
    await page.fill('#train-steps', '20');
    await page.click('#train-start');
    await page.waitForSelector('#train-status[data-state="done"][data-step="20"]', { timeout: 60_000 });
    // Reset ends the run and clears its curves
    await page.click('#train-reset');
    await page.waitForSelector('#train-status[data-state="idle"][data-step="0"]', { timeout: 20_000 });
    assert.ok(await page.isDisabled('#train-download'), 'nothing to download after Reset');
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});

test('the Llama, MoE and Dates presets train from the page, each with its own live view; the probe shows every head', { timeout: 300_000 }, async () => {
  const { page, context, log } = await openLab('cpu');
  try {
    const options = await page.$$eval('#train-preset option', (os) => os.map((o) => o.value));
    assert.deepEqual(options, ['induction', 'shakespeare', 'llama', 'moe', 'dates']);
    const small = { layers: 1, heads: 2, dim: 16, batch: 4, steps: 30, seed: 3 };
    for (const preset of ['llama', 'moe', 'dates']) {
      await page.selectOption('#train-preset', preset);
      await page.waitForSelector('#train-steps');
      for (const [k, v] of Object.entries(small)) await page.fill(`#train-${k}`, String(v));
      if (preset !== 'dates') await page.fill('#train-context', '32');
      await page.waitForFunction((p) => document.querySelector('#train-cli')?.textContent.includes(p === 'dates' ? '--task dates' : `--arch ${p}`) &&
        document.querySelector('#train-cli').textContent.includes('--steps 30'), preset, { timeout: 30_000 });
      const cli = await page.textContent('#train-cli');
      await page.click('#train-start');
      await page.waitForSelector('#train-status[data-state="done"][data-step="30"]', { timeout: 120_000 });
      const s = await status(page);
      assert.ok(Number(s.loss) < Number(s.lossFirst), `${preset}: the loss falls (${s.lossFirst} -> ${s.loss})`);
      await page.waitForSelector('#train-probe:not([hidden])', { timeout: 30_000 });
      if (preset === 'llama') {
        assert.match(cli, /--kv-heads 1/, 'two query heads per key/value head');
        const sample = await page.textContent('#train-sample');
        assert.ok(sample.length > 16, `a sample of the text model: ${JSON.stringify(sample)}`);
        assert.equal(await page.$$eval('#train-maps canvas', (cs) => cs.length), 2, 'one map per head of the probe');
        assert.ok(await page.$$eval('#train-heads-chart polyline', (ls) => ls.length) >= 4, 'each head\u2019s two scores over the steps');
      } else if (preset === 'moe') {
        assert.match(cli, /--experts 4 --top-k 2 --aux-loss 0.01/);
        assert.equal(await page.isHidden('#train-extra-chart'), false, 'the experts\u2019 load chart');
        const lines = await page.$$eval('#train-extra-chart polyline', (ls) => ls.map((l) => l.querySelector('title')?.textContent));
        assert.deepEqual(lines, ['expert 0', 'expert 1', 'expert 2', 'expert 3']);
      } else {
        const exact = Number(s.datesExact);
        assert.ok(s.datesExact !== '' && exact >= 0 && exact <= 1, `the held-out dates accuracy (${s.datesExact})`);
        assert.match(await page.textContent('#train-sample'), /\u2192/, 'translated examples');
        // the trained translator becomes the page's model, an encoder-decoder with its date characters
        await page.click('#train-use');
        await page.waitForFunction(() => window.tinyformer?.state?.model?.meta?.id === 'trained-here', null, { timeout: 60_000 });
        const card = await page.$$eval('#model-table tr', (rows) => Object.fromEntries(rows.map((r) => [r.dataset.field, r.dataset.value])));
        assert.equal(card.arch, 'encoder_decoder');
        assert.equal(card.tokenizer, 'chars');
      }
      console.log(`${preset}: ${s.step} steps, loss ${Number(s.lossFirst).toFixed(3)} -> ${Number(s.loss).toFixed(3)}, ${s.tokensPerS} tokens/s` +
        (preset === 'dates' ? `, ${s.datesExact} exact` : ''));
      await page.click('#train-reset');
      await page.waitForSelector('#train-status[data-state="idle"]', { timeout: 20_000 });
    }
    // live views off: the run trains without probing (no scores, no maps)
    await setSizes(page);
    await page.fill('#train-steps', '20');
    await page.setChecked('#train-live', false);
    await page.click('#train-start');
    await page.waitForSelector('#train-status[data-state="done"][data-step="20"]', { timeout: 60_000 });
    assert.equal((await status(page)).induction, '', 'no probe with the live views off');
    assert.equal(await page.isHidden('#train-probe'), true);
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});

test('the live sample\u2019s temperature: paused, a change re-samples the model at once, the same for the same step, greedy again at 0; it fits a phone', { timeout: 240_000 }, async () => {
  const { page, context, log } = await openLab('cpu');
  try {
    await page.selectOption('#train-preset', 'shakespeare');
    await page.waitForSelector('#train-steps');
    for (const [k, v] of Object.entries({ layers: 1, heads: 2, dim: 16, context: 64, batch: 4, steps: 40, seed: 3 })) await page.fill(`#train-${k}`, String(v));
    await page.waitForFunction(() => document.querySelector('#train-cli')?.textContent.includes('--steps 40'), null, { timeout: 30_000 });
    assert.equal(await page.inputValue('#train-sample-temp'), '0', 'greedy by default, as the probe was');
    const step = await startThenPause(page, '#train-start');
    await page.waitForSelector('#train-sample:not([hidden])', { timeout: 30_000 });
    assert.equal(await page.isVisible('#train-sample-temp'), true, 'the control beside a text model\u2019s sample');
    const sample = () => page.evaluate(() => {
      const el = document.querySelector('#train-sample');
      return { text: el.textContent, step: el.dataset.step, temperature: el.dataset.temperature };
    });
    const setTemp = async (v) => {
      await page.fill('#train-sample-temp', v);
      await page.press('#train-sample-temp', 'Tab'); // commits the value: a change event
    };
    const waitTemp = (t) => page.waitForSelector(`#train-sample[data-temperature="${t}"]`, { timeout: 30_000 });
    // the run's probe (at step 0) is greedy; paused, the current step is re-sampled at once
    const greedy = await sample();
    assert.equal(greedy.temperature, '0');
    await setTemp('1.5');
    await waitTemp('1.5');
    const hot = await sample();
    assert.equal(hot.step, String(step), 'the model where it paused');
    await setTemp('0');
    await waitTemp('0');
    const back = await sample();
    assert.equal(back.step, String(step));
    assert.notEqual(hot.text, back.text, 'a barely trained model sampled at 1.5 is not its greedy text');
    await setTemp('1.5');
    await waitTemp('1.5');
    assert.equal((await sample()).text, hot.text, 'the same step and temperature give the same sample');
    await setTemp('0');
    await waitTemp('0');
    assert.equal((await sample()).text, back.text, 'greedy comes back at 0');
    assert.equal(await page.evaluate(() => document.querySelector('#train-sample-temp').step), '0.1');
    // bad values: clamped to 0..2 in one line, or refused when not a number; never an error
    await setTemp('5');
    await waitTemp('2');
    assert.equal(await page.inputValue('#train-sample-temp'), '2');
    assert.match(await page.textContent('#train-sample-temp-note'), /^Kept within 0 to 2: 2\.$/);
    await setTemp('-1');
    await waitTemp('0');
    await page.evaluate(() => {
      const el = document.querySelector('#train-sample-temp');
      el.value = 'abc'; // a number input keeps '' for that
      el.dispatchEvent(new Event('change'));
    });
    assert.match(await page.textContent('#train-sample-temp-note'), /^Not a number: the sample stays at 0\.$/);
    assert.equal(await page.inputValue('#train-sample-temp'), '0');
    assert.equal(await page.isHidden('#train-error'), true, 'no error');
    // the screenshots, at 1280 and at phone width, where the control fits
    await setTemp('0.8');
    await waitTemp('0.8');
    await page.locator('#view-train').screenshot({ path: path.join(SHOT_DIR, 'lab-sample-temp-1280.png') });
    await page.setViewportSize({ width: 390, height: 800 });
    await page.waitForTimeout(200);
    const fits = await page.evaluate(() => {
      const box = (sel) => document.querySelector(sel).getBoundingClientRect();
      const c = box('.train-sample-temp');
      return { right: Math.max(c.right, box('#train-sample-temp').right), left: c.left, scroll: document.documentElement.scrollWidth };
    });
    assert.ok(fits.left >= 0 && fits.right <= 390 && fits.scroll <= 390, `the control fits 390 px: ${JSON.stringify(fits)}`);
    await page.locator('#train-probe').screenshot({ path: path.join(SHOT_DIR, 'lab-sample-temp-390.png') });
    await page.setViewportSize({ width: 1280, height: 800 });
    // Resume: the run's last probe samples at the temperature set
    await page.click('#train-pause');
    await page.waitForSelector('#train-status[data-state="done"][data-step="40"]', { timeout: 120_000 });
    await page.waitForSelector('#train-sample[data-step="40"][data-temperature="0.8"]', { timeout: 30_000 });
    console.log(`step ${step} greedy: ${JSON.stringify(back.text)}\nstep ${step} T=1.5: ${JSON.stringify(hot.text)}`);
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});
