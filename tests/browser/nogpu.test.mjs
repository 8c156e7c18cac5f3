// The playground page without WebGPU: a Chromium launched without --enable-unsafe-webgpu, plus
//  - navigator.gpu removed in the page by an init script, and
//  - the page's `?nogpu=1` test hook, which app.js passes on to the worker (an init script cannot reach
//    into a worker), where worker.js removes navigator.gpu before the core looks for it.
// The page must say plainly that WebGPU is missing, and the masks must still work; the models run on the
// CPU path of the wasm core (the fallback notice shows) and generation works.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import {
  SHOT_DIR, setup, openPage, assertClean, setMasks, readMatrix, expectedMatrix, shippedModels, assertModelFile, waitModel, setGenerate,
  generateAndWait,
} from './_harness.mjs';

const REMOVE_GPU = () => {
  try {
    Object.defineProperty(Navigator.prototype, 'gpu', { value: undefined, configurable: true });
  } catch { /* ignore */ }
};

let env;
before(async () => {
  env = await setup({ webgpu: false });
});
after(async () => {
  await env?.close();
});

test('WebGPU missing: a plain message, no self-test, masks still work', async () => {
  const { page, context, log } = await openPage(env, '?nogpu=1&nomodel=1', { initScript: REMOVE_GPU });
  try {
    assert.equal(await page.evaluate(() => navigator.gpu), undefined, 'the init script removed navigator.gpu');
    await page.waitForSelector('#device-status[data-state="ready"]', { timeout: 60_000 });
    assert.equal(await page.getAttribute('#device-status', 'data-backend'), 'none');
    assert.equal(await page.getAttribute('#device-status', 'data-reason'), 'no-webgpu');
    const message = await page.locator('#device-message').innerText();
    console.log(`no WebGPU: ${message}`);
    assert.match(message, /WebGPU is not available in this browser/);
    // Every view works without WebGPU (not only "the masks below"), and nobody chose the CPU path: it is the only one.
    const advice = await page.locator('#device-advice').innerText();
    assert.match(advice, /Every view still works: the models run on the CPU path .* the only path here, so “Run on” has nothing to choose\. Only the kernel self-test needs WebGPU\./);
    assert.doesNotMatch(await page.locator('#device-status').innerText(), /masks below|as you chose|faster path/);
    assert.equal(await page.inputValue('#model-backend'), 'cpu', '"Run on" shows the one path there is');
    assert.equal(await page.isDisabled('#model-backend'), true);

    assert.equal(await page.getAttribute('#selftest-summary', 'data-state'), 'unavailable');
    assert.equal(await page.isDisabled('#selftest-run'), true);
    assert.match(await page.locator('#selftest-summary').innerText(), /needs WebGPU/);

    await setMasks(page, { seqLen: 5, numPad: 2, cachedLen: 0 });
    assert.deepEqual((await readMatrix(page, 'combined')).cells, expectedMatrix(5, 5, (i, j) => j <= i && j < 3));

    assertClean(assert, log);
  } finally {
    await context.close();
  }
});

test('WebGPU present but no adapter: says so plainly', async () => {
  // Same browser (no --enable-unsafe-webgpu), no hooks: navigator.gpu exists but requestAdapter() gives null.
  const { page, context, log } = await openPage(env, '?nomodel=1');
  try {
    await page.waitForSelector('#device-status[data-state="ready"]', { timeout: 60_000 });
    assert.equal(await page.getAttribute('#device-status', 'data-backend'), 'none');
    const message = await page.locator('#device-message').innerText();
    console.log(`no adapter: ${message} | ${await page.locator('#device-status').innerText()}`);
    assert.match(message, /no GPU adapter was found/);
    assert.equal(await page.getAttribute('#selftest-summary', 'data-state'), 'unavailable');
    await setMasks(page, { seqLen: 3, numPad: 0, cachedLen: 2 });
    assert.deepEqual((await readMatrix(page, 'kv_cache')).cells, expectedMatrix(3, 5, (i, j) => j <= 2 + i));
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});

test('CPU fallback (this Chromium, no WebGPU flag, no test hooks): the notice shows, the default model generates on the CPU', { timeout: 240_000 }, async () => {
  const def = shippedModels().find((m) => m.default);
  assertModelFile(assert, def.file);
  const { page, context, log } = await openPage(env, '');
  try {
    await page.waitForSelector('#backend-notice:not([hidden])', { timeout: 60_000 });
    const notice = await page.locator('#backend-notice').innerText();
    console.log(`fallback notice: ${notice.split('\n')[0]}`);
    assert.equal(await page.getAttribute('#backend-notice', 'data-reason'), 'no-adapter');
    assert.match(notice, /no usable GPU adapter.*CPU path.*Every view works; the kernel self-test needs WebGPU/s);
    assert.doesNotMatch(notice, /slower/, 'the CPU path is not "only slower": on some devices it is the faster one');
    await waitModel(page, def.id);
    assert.equal(await page.getAttribute('#model-card', 'data-backend'), 'cpu');
    // The device view shows the one path measured, in use; "Run on" has nothing to choose.
    assert.deepEqual(await page.$$eval('#device-speed-table tr', (trs) => trs.map((tr) => tr.dataset.path)), ['cpu']);
    assert.ok(Number(await page.getAttribute('#device-speed-table tr[data-path="cpu"]', 'data-tps')) > 0);
    assert.equal(await page.getAttribute('#device-speed', 'data-chosen'), 'cpu');
    assert.equal(await page.isDisabled('#model-backend'), true);
    assert.equal(await page.inputValue('#model-backend'), 'cpu');
    assert.equal(await page.getAttribute('#device-speed', 'data-choice'), 'only');
    const speedText = await page.locator('#device-speed').innerText();
    console.log(`CPU only: ${speedText.replace(/\s*\n\s*/g, ' | ')}`);
    assert.match(await page.locator('#device-speed-summary').innerText(), /running on the CPU path, the only path here \(no usable WebGPU\)\.$/);
    assert.equal(await page.locator('#device-speed-choice').count(), 0, 'no line about a choice nobody made');
    assert.doesNotMatch(await page.locator('#device-status').innerText(), /as you chose|“the faster path|masks below/);
    await page.locator('#view-device').screenshot({ path: path.join(SHOT_DIR, 'nogpu-device-desktop.png') });
    await setGenerate(page, { prompt: 'ROMEO:\n', temperature: 0.8, seed: 5, max: 12 });
    const out = await generateAndWait(page);
    console.log(`CPU: ${out.count} tokens at ${out.tps} tokens/s: ${JSON.stringify(out.text)}`);
    assert.equal(out.state, 'done', out.error);
    assert.equal(out.count, 12);
    assert.ok(out.text.length > 0);
    assert.equal(out.text, out.streamed);
    assert.match(await page.locator('#gen-stats').innerText(), /tokens\/s · 12 tokens · CPU/);
    await page.waitForSelector('#attention-root[data-state="ready"]', { timeout: 60_000 });
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});
