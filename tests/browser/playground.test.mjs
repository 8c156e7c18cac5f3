// The playground page in headless Chromium with WebGPU on SwiftShader: adapter, kernel self-test, masks,
// bad input, worker restart, and no requests to other origins / no uncaught errors.
//
// Needs the real wasm core in www/pkg (scripts/build-wasm.sh) and Debian's /usr/bin/chromium.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { setup, openPage, assertClean, setMasks, readMatrix, expectedMatrix } from './_harness.mjs';

const SELFTEST_TIMEOUT_MS = 180_000; // every kernel on SwiftShader (a CPU): slow, give it room

let env;
before(async () => {
  const pkg = new URL('../../www/pkg/tinyformer_bg.wasm', import.meta.url);
  assert.ok(fs.existsSync(pkg), 'www/pkg/tinyformer_bg.wasm is missing: run scripts/build-wasm.sh first');
  env = await setup({ webgpu: true });
});
after(async () => {
  await env?.close();
});

test('finds the WebGPU adapter and passes every kernel self-test check', { timeout: SELFTEST_TIMEOUT_MS + 60_000 }, async () => {
  const { page, context, log } = await openPage(env, '?selftest=1&nomodel=1');
  try {
    // 1. About this device: an adapter must be found. A missing adapter is a failure, never a skip.
    const status = page.locator('#device-status');
    await page.waitForSelector('#device-status[data-state="ready"], #device-status[data-state="error"]', { timeout: 60_000 });
    const backend = await status.getAttribute('data-backend');
    const deviceText = (await status.innerText()).replace(/\t/g, ': ').replace(/\s*\n\s*/g, ' | ');
    console.log(`device: backend=${backend}: ${deviceText}`);
    assert.equal(backend, 'webgpu', `expected a WebGPU adapter, the page says: ${deviceText}`);
    const adapter = await page.$$eval('#device-adapter tr', (rows) =>
      Object.fromEntries(rows.map((r) => [r.dataset.field, r.querySelector('td').textContent])));
    console.log('adapter:', JSON.stringify(adapter));
    const limits = await page.$$eval('#device-limits tr', (rows) =>
      Object.fromEntries(rows.map((r) => [r.dataset.limit, Number(r.dataset.value)])));
    console.log('limits:', JSON.stringify(limits));
    assert.ok(limits.max_storage_buffer_binding_size > 0, 'limits are shown');
    assert.match(await page.locator('#core-version').innerText(), /^\d+\.\d+\.\d+/);

    // 2. The self-test runs by itself once an adapter is there.
    const t0 = Date.now();
    await page.waitForSelector('#selftest-summary[data-state="done"], #selftest-summary[data-state="error"]',
      { timeout: SELFTEST_TIMEOUT_MS });
    const summary = page.locator('#selftest-summary');
    const summaryText = await summary.innerText();
    const rows = await page.$$eval('#selftest-table tbody tr', (trs) => trs.map((tr) => ({
      name: tr.dataset.check,
      ok: tr.dataset.ok === 'true',
      maxAbsDiff: tr.dataset.maxAbsDiff,
      cells: [...tr.children].map((c) => c.textContent.trim()),
    })));
    console.log(`self-test: ${summaryText} (waited ${((Date.now() - t0) / 1000).toFixed(1)} s)`);
    for (const r of rows) {
      console.log(`  ${r.ok ? 'ok  ' : 'FAIL'} ${r.name}  max|diff|=${r.maxAbsDiff}  tol=${r.cells[3]}  ${r.cells[4]}  ${r.cells[5]}`);
    }
    assert.equal(await summary.getAttribute('data-state'), 'done', `self-test did not finish: ${summaryText}`);
    const passed = Number(await summary.getAttribute('data-passed'));
    const failed = Number(await summary.getAttribute('data-failed'));
    const total = Number(await summary.getAttribute('data-total'));
    assert.ok(total >= 1, 'the core reports at least one check');
    assert.equal(rows.length, total, 'one row per check');
    assert.deepEqual(rows.filter((r) => !r.ok).map((r) => r.name), [], 'failed checks');
    assert.equal(failed, 0);
    assert.equal(passed, total);
    assert.match(summaryText, new RegExp(`^${passed} passed, 0 failed`));

    // 3. The page talked to nobody else, logged no errors (a CSP violation would log one), and carries
    //    the Content-Security-Policy: only 'self', plus 'wasm-unsafe-eval' for the wasm core.
    const csp = await page.getAttribute('meta[http-equiv="Content-Security-Policy"]', 'content');
    assert.match(csp, /(^|;)\s*default-src 'self'\s*(;|$)/);
    assert.match(csp, /(^|;)\s*script-src 'self' 'wasm-unsafe-eval'\s*(;|$)/);
    assert.doesNotMatch(csp, /https?:|\*|'unsafe-inline'|'unsafe-eval'/, 'no remote origins or inline code');
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});

test('masks: combined (look-ahead AND padding) and KV-cache cells match the expected matrices', async () => {
  const { page, context, log } = await openPage(env, '?nomodel=1');
  try {
    await setMasks(page, { seqLen: 5, numPad: 2, cachedLen: 0 });

    // Combined for 5 tokens, 2 PAD: key j allowed iff j <= i and j < 3.
    const combined = await readMatrix(page, 'combined');
    assert.equal(combined.rows, 5);
    assert.equal(combined.cols, 5);
    assert.equal(combined.count, 25, 'every cell is drawn');
    assert.deepEqual(combined.cells, expectedMatrix(5, 5, (i, j) => j <= i && j < 3));
    assert.deepEqual(combined.rowLabels.slice(3), ['PAD', 'PAD'], 'PAD positions are labelled');
    assert.deepEqual(combined.colLabels.slice(3), ['PAD', 'PAD']);

    // And its two parts.
    assert.deepEqual((await readMatrix(page, 'look_ahead')).cells, expectedMatrix(5, 5, (i, j) => j <= i));
    assert.deepEqual((await readMatrix(page, 'padding')).cells, expectedMatrix(5, 5, (i, j) => j < 3));

    // Cross-attention over the padded source: every decoder row sees source keys 0..2, never the PADs.
    const cross = await readMatrix(page, 'cross');
    assert.equal(cross.rows, 5);
    assert.equal(cross.cols, 5);
    assert.deepEqual(cross.cells, expectedMatrix(5, 5, (i, j) => j < 3));

    // KV cache: 2 new tokens after 3 cached ones: rows 2, cols 5; row 0 sees keys 0..3, row 1 keys 0..4.
    await setMasks(page, { seqLen: 2, numPad: 0, cachedLen: 3 });
    const kv = await readMatrix(page, 'kv_cache');
    assert.equal(kv.rows, 2);
    assert.equal(kv.cols, 5);
    assert.equal(kv.count, 10);
    assert.deepEqual(kv.cells, [
      [1, 1, 1, 1, 0],
      [1, 1, 1, 1, 1],
    ]);

    // Every matrix has its one-line explanation, and the legend states the convention.
    const explained = await page.$$eval('[data-matrix] .matrix-explain', (ps) => ps.map((p) => p.textContent.trim()));
    assert.equal(explained.length, 5);
    assert.ok(explained.every((t) => t.length > 10));
    assert.match(await page.locator('.legend').innerText(), /1\s*= may attend.*0\s*= blocked/s);

    assertClean(assert, log);
  } finally {
    await context.close();
  }
});

test('masks: bad input shows the core\'s error and keeps what the user typed', async () => {
  const { page, context, log } = await openPage(env, '?nomodel=1');
  try {
    await setMasks(page, { seqLen: 5, numPad: 2, cachedLen: 3 });

    // More PAD tokens than tokens.
    await page.fill('#masks-seq-len', '3');
    await page.fill('#masks-num-pad', '5');
    await page.click('#masks-draw');
    await page.waitForSelector('#masks-error:not([hidden])', { timeout: 30_000 });
    const message = await page.locator('#masks-error').innerText();
    console.log(`bad input (seq 3, PAD 5): ${message}`);
    assert.ok(message.trim().length > 0, 'an error message is shown');
    assert.equal(await page.inputValue('#masks-seq-len'), '3');
    assert.equal(await page.inputValue('#masks-num-pad'), '5');
    assert.equal(await page.inputValue('#masks-cached-len'), '3');
    // a debounced redraw from the typing may still be in flight: the grid settles on "error"
    await page.waitForSelector('#masks-grid[data-state="error"]', { timeout: 30_000 });
    assert.equal(await page.getAttribute('#masks-grid', 'data-state'), 'error');

    // Out of range length: the core's message again, values kept.
    await page.fill('#masks-num-pad', '0');
    await page.fill('#masks-seq-len', '65');
    await page.click('#masks-draw');
    await page.waitForFunction(() => {
      const el = document.getElementById('masks-error');
      return !el.hidden && el.textContent.includes('64');
    }, null, { timeout: 30_000 });
    console.log(`bad input (seq 65): ${await page.locator('#masks-error').innerText()}`);
    assert.equal(await page.inputValue('#masks-seq-len'), '65');

    // Fixing the input clears the error and draws again.
    await setMasks(page, { seqLen: 4, numPad: 1, cachedLen: 3 });
    assert.equal(await page.locator('#masks-error').isHidden(), true);
    assert.deepEqual((await readMatrix(page, 'combined')).cells, expectedMatrix(4, 4, (i, j) => j <= i && j < 3));

    assertClean(assert, log);
  } finally {
    await context.close();
  }
});

test('a dead worker is restarted, says what happened, and keeps the inputs', async () => {
  const { page, context, log } = await openPage(env, '?nomodel=1');
  try {
    await setMasks(page, { seqLen: 6, numPad: 1, cachedLen: 2 });
    await page.waitForSelector('#device-status[data-state="ready"]', { timeout: 60_000 });

    // A panic (RuntimeError "unreachable" out of a wasm call), then an uncaught error in the worker.
    for (const [n, mode] of [[1, 'panic'], [2, 'error']]) {
      await page.fill('#masks-seq-len', String(6 + n)); // typed, not yet drawn
      await page.evaluate((m) => { window.tinyformer.crashWorker(m); }, mode);
      await page.waitForSelector(`body[data-worker-restarts="${n}"]`, { timeout: 30_000 });
      const notice = await page.locator('#worker-notice').innerText();
      console.log(`worker restart ${n} (${mode}): ${notice.split('\n')[0]}`);
      assert.match(notice, /restarted/);
      if (mode === 'panic') assert.match(notice, /deliberate panic for testing/, 'the panic message reaches the user');
      assert.equal(await page.inputValue('#masks-seq-len'), String(6 + n), 'typed input kept');
      // The fresh worker draws the inputs as they are now and finds the adapter again.
      await page.waitForSelector(`#masks-grid[data-state="ready"][data-seq-len="${6 + n}"]`, { timeout: 30_000 });
      await page.waitForSelector('#device-status[data-state="ready"][data-backend="webgpu"]', { timeout: 60_000 });
    }
    assertClean(assert, log, { allow: [/panicked at|deliberate panic/] }); // the real panic's own console report
  } finally {
    await context.close();
  }
});
