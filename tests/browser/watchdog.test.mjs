// The page under the dev server's headers (cross-origin isolated), the watchdog on worker calls, the
// crash-loop guard and the BPE workbench's bounds. The "too heavy" call is a
// real Rust busy loop in the core (debug_hang, armed by window.tinyformer.hangNext), stopped by the page.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setup, openPage, assertClean, waitModel } from './_harness.mjs';

let env;
before(async () => { env = await setup(); });
after(async () => { await env?.close(); });

test('the page runs cross-origin isolated under CSP, COOP and COEP headers', async () => {
  const { page, context, log } = await openPage(env, '?nomodel=1');
  try {
    const res = await page.request.get(env.url);
    assert.equal(res.headers()['cross-origin-embedder-policy'], 'require-corp');
    assert.match(res.headers()['content-security-policy'], /frame-ancestors 'none'/);
    assert.equal(await page.evaluate(() => globalThis.crossOriginIsolated), true, 'COOP + COEP took effect');
    // The wasm core, its worker and the views all load under require-corp (everything is same-origin).
    await page.waitForSelector('#device-status[data-state="ready"]', { timeout: 60_000 });
    await page.waitForSelector('#masks-grid[data-state="ready"]', { timeout: 30_000 });
    assert.notEqual(await page.locator('#core-version').getAttribute('data-state'), 'error');
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});

test('a BPE training past its limit: the worker is restarted, the action is named, the inputs are kept', async () => {
  const { page, context, log } = await openPage(env, '?nomodel=1');
  try {
    await page.waitForSelector('#device-status[data-state="ready"]', { timeout: 60_000 });
    const text = 'my own text, typed by hand: lower lowest newer newest';
    await page.fill('#bpe-text', text);
    await page.fill('#bpe-vocab', '40');
    await page.fill('#bpe-sentence', 'newest lower');
    await page.evaluate(() => window.tinyformer.hangNext('bpe', 2000));
    await page.click('#bpe-train');
    await page.waitForSelector('body[data-worker-restarts="1"]', { timeout: 30_000 });
    await page.waitForSelector('#bpe-root[data-state="error"]');
    const status = await page.locator('#bpe-status').innerText();
    const notice = await page.locator('#worker-notice').innerText();
    console.log(`watchdog (bpe): ${notice.split('\n')[0]}`);
    assert.match(status, /training the BPE workbench took longer than 2 s/);
    assert.match(notice, /training the BPE workbench took longer than 2 s.*restarted\. Your inputs are kept/);
    assert.equal(await page.inputValue('#bpe-text'), text, 'the training text is kept');
    assert.equal(await page.inputValue('#bpe-sentence'), 'newest lower');
    // The fresh worker trains the same inputs.
    await page.click('#bpe-train');
    await page.waitForSelector('#bpe-root[data-state="ready"]', { timeout: 30_000 });
    assert.ok(Number(await page.getAttribute('#bpe-root', 'data-merges')) > 0);
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});

test('a model load past its limit: the model is named and not loaded again; the previous one comes back', async () => {
  const { page, context, log } = await openPage(env, '?model=tests/fixtures/models/decoder_b.safetensors');
  try {
    await waitModel(page, 'decoder_b.safetensors');
    await page.evaluate(() => window.tinyformer.hangNext('load', 3000));
    await page.click('#model-list button[data-model="dates-encdec"]');
    await page.waitForSelector('body[data-worker-restarts="1"]', { timeout: 60_000 });
    const notice = await page.locator('#worker-notice').innerText();
    console.log(`watchdog (load): ${notice.split('\n')[0]}`);
    assert.match(notice, /loading the model took longer than 3 s/);
    assert.match(notice, /while Dates \(encoder-decoder\) was loading, so Dates \(encoder-decoder\) was not loaded again/);
    assert.match(notice, /decoder_b\.safetensors is being loaded again/);
    assert.equal(await page.getAttribute('body', 'data-crashed-model'), 'dates-encdec');
    // The model that was loaded before comes back in the fresh worker, and is the only load that happens.
    await waitModel(page, 'decoder_b.safetensors', 60_000);
    await page.waitForFunction(() => !document.getElementById('gen-start').disabled, null, { timeout: 60_000 });
    assert.equal(await page.getAttribute('body', 'data-worker-restarts'), '1');
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});

test('a model that crashes the worker twice while running is not reloaded the second time', async () => {
  const { page, context, log } = await openPage(env, '?model=tests/fixtures/models/decoder_b.safetensors');
  try {
    await waitModel(page, 'decoder_b.safetensors');
    // First: a generation step past its limit. decoder_b is reloaded once.
    await page.fill('#prompt', '3 1 4');
    await page.evaluate(() => window.tinyformer.hangNext('generate', 2000));
    await page.click('#gen-start');
    await page.waitForSelector('body[data-worker-restarts="1"]', { timeout: 30_000 });
    assert.match(await page.locator('#worker-notice').innerText(), /one generation step took longer than 2 s.*decoder_b\.safetensors is being loaded again/);
    await page.waitForFunction(() => !document.getElementById('gen-start').disabled, null, { timeout: 60_000 });
    // A panic in a call that does not run the model (the crash hook) is not counted against it: reloaded.
    await page.evaluate(() => { window.tinyformer.crashWorker('panic'); });
    await page.waitForSelector('body[data-worker-restarts="2"]', { timeout: 30_000 });
    assert.match(await page.locator('#worker-notice').innerText(), /decoder_b\.safetensors is being loaded again/);
    await page.waitForFunction(() => !document.getElementById('gen-start').disabled, null, { timeout: 60_000 });
    // Second crash while the model runs: not reloaded blindly.
    await page.evaluate(() => window.tinyformer.hangNext('generate', 2000));
    await page.click('#gen-start');
    await page.waitForSelector('body[data-worker-restarts="3"]', { timeout: 30_000 });
    const notice = await page.locator('#worker-notice').innerText();
    console.log(`crash guard: ${notice.split('\n')[0]}`);
    assert.match(notice, /while decoder_b\.safetensors was running \(2 times\), so decoder_b\.safetensors was not loaded again/);
    assert.match(notice, /one generation step took longer than 2 s/);
    assert.doesNotMatch(notice, /being loaded again/);
    assert.equal(await page.getAttribute('body', 'data-crashed-model'), 'decoder_b.safetensors');
    assert.equal(await page.inputValue('#prompt'), '3 1 4', 'the prompt is kept');
    assert.match(await page.locator('#model-error').innerText(), /decoder_b\.safetensors stopped the compute worker/);
    assertClean(assert, log, { allow: [/panicked at|deliberate panic|unreachable/] });
  } finally {
    await context.close();
  }
});

test('the BPE workbench refuses inputs over its bounds, in the page and in the core', async () => {
  const { page, context, log } = await openPage(env, '?nomodel=1');
  try {
    await page.waitForSelector('#device-status[data-state="ready"]', { timeout: 60_000 });
    assert.equal(await page.getAttribute('#bpe-text', 'maxlength'), String(1 << 20));
    assert.equal(await page.getAttribute('#bpe-sentence', 'maxlength'), '200');
    // Past the fields' maxlength (a script, a paste handler): the worker refuses before the core sees it.
    const big = await page.evaluate(() => window.tinyformer.call('bpe', { text: 'é'.repeat(600_000), vocab_size: 50, sentence: 'x' })
      .then(() => 'ok', (e) => e.message));
    assert.match(big, /training text is limited to 1 MB/);
    const long = await page.evaluate(() => window.tinyformer.call('bpe', { text: 'a b', vocab_size: 50, sentence: 'y'.repeat(201) })
      .then(() => 'ok', (e) => e.message));
    assert.match(long, /sentence is limited to 200 characters/);
    const vocab = await page.evaluate(() => window.tinyformer.call('bpe', { text: 'a b', vocab_size: 5001, sentence: 'a' })
      .then(() => 'ok', (e) => e.message));
    assert.match(vocab, /between 1 and 5000/);
    // At the bounds it works: 1 MB of words to 5000 tokens, a 200-character sentence.
    const words = ['lorem', 'ipsum', 'dolor', 'sit', 'amet', 'consectetur', 'adipiscing', 'elit', 'sed', 'do'];
    const r = await page.evaluate(({ words }) => {
      let text = '';
      let k = 0;
      while (text.length < (1 << 20) - 20) text += `${words[k % 10]}${k++ % 997} `;
      return window.tinyformer.call('bpe', { text, vocab_size: 5000, sentence: 'lorem1 ipsum2 '.repeat(14).slice(0, 200) })
        .then((res) => ({ merges: res.merges.length, steps: res.steps.length, last: res.steps.at(-1).length }));
    }, { words });
    assert.ok(r.merges > 1000, `${r.merges} merges`);
    assert.equal(r.steps, r.merges + 1);
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});
