// The playground page without WebGPU: a Chromium launched without --enable-unsafe-webgpu, plus
//  - navigator.gpu removed in the page by an init script, and
//  - the page's `?nogpu=1` test hook, which app.js passes on to the worker (an init script cannot reach
//    into a worker), where worker.js removes navigator.gpu before the core looks for it.
// The page must say plainly that WebGPU is missing, and the masks must still work.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setup, openPage, assertClean, setMasks, readMatrix, expectedMatrix } from './_harness.mjs';

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
  const { page, context, log } = await openPage(env, '?nogpu=1', { initScript: REMOVE_GPU });
  try {
    assert.equal(await page.evaluate(() => navigator.gpu), undefined, 'the init script removed navigator.gpu');
    await page.waitForSelector('#device-status[data-state="ready"]', { timeout: 60_000 });
    assert.equal(await page.getAttribute('#device-status', 'data-backend'), 'none');
    assert.equal(await page.getAttribute('#device-status', 'data-reason'), 'no-webgpu');
    const message = await page.locator('#device-message').innerText();
    console.log(`no WebGPU: ${message}`);
    assert.match(message, /WebGPU is not available in this browser/);

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
  const { page, context, log } = await openPage(env, '?noselftest=1');
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
