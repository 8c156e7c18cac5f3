// Streaming on the page's CPU path (the wasm fast backend, ~1,400 tok/s in the core): the worker yields
// between tokens with a MessageChannel (not setTimeout(0), clamped by Chromium to ~4.5 ms a token) and posts
// the tokens coalesced, at most one message per ~16 ms frame; the page draws them at most once per animation
// frame, while the cards off screen are skipped (content-visibility, style.css). Checked through the page's UI: a
// long generation reaches the page in far fewer messages than tokens (one message per token before), the other
// cards are skipped while it runs and drawn again after, the main thread never freezes (FREEZE_MS; the long tasks
// are printed), every token is drawn once, in order, with its data (ids, text, top candidates), Stop still lands
// between two tokens, and the output looks right at desktop and phone widths (screenshots under
// test-output/screenshots/stream-*).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  setup, openPage, assertClean, shippedModels, assertModelFile, longTaskObserver, waitModel, setGenerate,
  generateAndWait, readOutput, markEnd, waitPromptAnalysed, FREEZE_MS, SHOT_DIR,
} from './_harness.mjs';

const DEFAULT = shippedModels().find((m) => m.default);
const N = 240; // the shipped llama's context is 256: a 240-token generation after "ROMEO:\n" fits

let env;
before(async () => {
  env = await setup({ webgpu: true });
});
after(async () => {
  await env?.close();
});

/** What the page drew and holds: the output's chips (ids, steps) and the run's ids (window.tinyformer). */
async function drawn(page) {
  return page.evaluate(() => {
    const toks = [...document.querySelectorAll('#gen-output .tok')];
    return {
      ids: toks.map((b) => Number(b.dataset.id)),
      steps: toks.map((b) => Number(b.dataset.step)),
      runIds: window.tinyformer.state.run?.gen ?? [],
      messages: Number(document.body.dataset.genTokenMessages),
      messagesSeen: Number(document.body.dataset.genTokenMessagesSeen),
    };
  });
}

for (const width of [1280, 390]) {
  test(`CPU path at ${width} px: ${N} tokens arrive in far fewer messages than tokens, every one drawn with its data; the cards off screen are skipped meanwhile; no freeze`, { timeout: 300_000 }, async () => {
    assertModelFile(assert, DEFAULT.file);
    const { page, context, log } = await openPage(env, '?backend=cpu', { viewport: { width, height: 800 }, initScript: longTaskObserver });
    try {
      await waitModel(page, DEFAULT.id);
      const backend = await page.$eval('#model-table tr[data-field="backend"]', (r) => r.dataset.value);
      assert.equal(backend, 'cpu', '?backend=cpu runs the model on the CPU path');
      await setGenerate(page, { prompt: 'ROMEO:\n', temperature: 0, max: N });
      // t0 is the click on Generate: the analysis of the typed prompt has been drawn before it
      await waitPromptAnalysed(page);
      const t0 = await markEnd(page);
      const out = await generateAndWait(page);
      const t1 = await page.evaluate(() => window.__genEnd);
      assert.ok(t1 > t0);
      const d = await drawn(page);
      console.log(`${width} px: ${out.count} tokens at ${out.tps} tokens/s (first token ${out.ttft} ms) in ${d.messages} token messages`);
      assert.equal(out.state, 'done');
      assert.equal(out.count, N);
      // Tokens stream: the output is drawn with some of them while the run goes on, then with more (read in the
      // page at each draw; N tokens take many frames even at thousands of tokens a second).
      const counts = await page.evaluate(() => window.__drawnCounts);
      assert.ok(counts.some((n) => n < N), `some tokens were drawn before the last one came: ${JSON.stringify(counts)}`);
      assert.ok(counts.every((n, i) => i === 0 || n >= counts[i - 1]), 'the count only grows');
      // Structural, not timed: one message per token before (N messages); the worker now sends at most one per
      // TOKEN_FLUSH_MS (16 ms) and the last ones before its answer, so the count is bounded by the run's length on
      // any machine (240 tokens took 15-17 messages on a quiet 2-core machine, ~70 under a load of three builds),
      // and below N (the CPU path makes far more than one token per 16 ms). The page saw every message sent.
      assert.equal(d.messagesSeen, d.messages);
      const bound = Math.ceil((t1 - t0) / 16) + 2;
      assert.ok(d.messages >= 1 && d.messages <= bound && d.messages < N, `${d.messages} token messages for ${N} tokens in ${Math.round(t1 - t0)} ms (bound ${bound})`);
      // Every token drawn once, in order, and the page's run holds the same ids.
      assert.deepEqual(d.steps, Array.from({ length: N }, (_, i) => i));
      assert.deepEqual(d.ids, d.runIds);
      assert.equal(out.text, out.streamed, 'the decoded text equals what was drawn');
      assert.ok(out.text.length >= N / 2);
      assert.match(await page.locator('#gen-stats').innerText(), new RegExp(`[\\d.]+ tokens/s · ${N} tokens · CPU`));

      const tasks = await page.evaluate(() => window.__longTasks);
      const during = tasks.filter((t) => t.start + t.duration >= t0 && t.start <= t1);
      console.log(`long tasks during generation: ${JSON.stringify(during)}`);
      const frames = (await page.evaluate(() => window.__longFrames)).filter((f) => f.start + f.duration >= t0 && f.start <= t1);
      console.log(`long animation frames during generation (t0 ${Math.round(t0)}, t1 ${Math.round(t1)}): ${JSON.stringify(frames)}`);
      assert.ok(during.every((t) => t.duration <= FREEZE_MS), `a task froze the main thread: ${JSON.stringify(during)}`);
      // What keeps the tasks short: while tokens streamed, every card but the model's and the output's could be
      // skipped by the browser when off screen; after the run they are ordinary cards again.
      const cards = await page.$$eval('main section.card', (cs) => cs.map((c) => [c.id, getComputedStyle(c).contentVisibility]));
      const others = cards.map(([id]) => id).filter((id) => id !== 'view-model' && id !== 'view-generate');
      assert.deepEqual(await page.evaluate(() => window.__skippedWhileRunning), others);
      assert.ok(cards.every(([, cv]) => cv === 'visible'), `after the run: ${JSON.stringify(cards)}`);

      // Each token's data reached the views: a late step's top candidates mark the drawn token as chosen.
      const step = N - 7;
      await page.waitForFunction((n) => (window.tinyformer.attention()?.rows ?? 0) > n, N, { timeout: 120_000 });
      await page.click(`#gen-output .tok[data-step="${step}"]`);
      await page.waitForSelector(`#attention-root[data-step="${step}"]`);
      assert.equal(await page.getAttribute('#next-root li.cand.chosen', 'data-id'), String(d.ids[step]));
      assert.equal(await page.locator('#next-root li.cand').count(), 10);

      // Nothing sideways at this width; a screenshot of the output to look at.
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
      assert.ok(overflow <= 0, `the page scrolls sideways by ${overflow} px`);
      fs.mkdirSync(SHOT_DIR, { recursive: true });
      const view = page.locator('#view-generate');
      await view.scrollIntoViewIfNeeded();
      await view.screenshot({ path: path.join(SHOT_DIR, `stream-cpu-${width}-done.png`) });
      assertClean(assert, log);
    } finally {
      await context.close();
    }
  });
}

test('Stop on the CPU path lands between two tokens; what was drawn is what the run holds; the page generates again', { timeout: 300_000 }, async () => {
  assertModelFile(assert, DEFAULT.file);
  const { page, context, log } = await openPage(env, '?backend=cpu', { initScript: longTaskObserver });
  try {
    await waitModel(page, DEFAULT.id);
    // A sliding window, so the generation would run far longer than the test waits.
    await page.setChecked('#gen-slide', true);
    const MAX = 20000;
    await setGenerate(page, { prompt: 'KING HENRY:\n', temperature: 0.8, seed: 3, max: MAX });
    await page.click('#gen-start');
    await page.waitForFunction(() => Number(document.getElementById('gen-output').dataset.count) >= 50, null, { timeout: 120_000 });
    fs.mkdirSync(SHOT_DIR, { recursive: true });
    await page.locator('#view-generate').screenshot({ path: path.join(SHOT_DIR, 'stream-cpu-1280-running.png') });
    await page.click('#gen-stop');
    await page.waitForSelector('#gen-output[data-state="stopped"]', { timeout: 30_000 });
    const stopped = await readOutput(page);
    const d = await drawn(page);
    await page.waitForTimeout(1000);
    const later = await readOutput(page);
    console.log(`stopped after ${stopped.count} of ${MAX} tokens, ${d.messages} token messages`);
    assert.ok(stopped.count >= 50 && stopped.count < MAX);
    assert.equal(later.count, stopped.count, 'no tokens after Stop');
    assert.equal(stopped.text, stopped.streamed);
    assert.deepEqual(d.steps, Array.from({ length: stopped.count }, (_, i) => i), 'the last batch was drawn before the end');
    assert.deepEqual(d.ids, d.runIds);
    assert.ok(d.messages < stopped.count, `${d.messages} token messages for ${stopped.count} tokens`);
    assert.equal(await page.getAttribute('#gen-end', 'data-reason'), 'stopped');

    await setGenerate(page, { max: 4 });
    const again = await generateAndWait(page);
    assert.equal(again.state, 'done');
    assert.equal(again.count, 4);
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});
