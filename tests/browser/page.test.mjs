// The page around the lab, tried as a new user would (issue 23 §5), in headless Chromium with WebGPU on SwiftShader,
// driven from the page's own controls: the output follows the newest token (unless the reader scrolled up), a
// prompt kept from another kind of model says so where the prompt is, Inspect says what its numbers are, the prompt
// and Generate are on a phone's first screen, and counts read "1 token". Screenshots at 1280 and 390 px.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  setup, openPage, assertClean, shippedModels, assertModelFile, waitModel, setGenerate, generateAndWait, SHOT_DIR,
} from './_harness.mjs';

const MODELS = shippedModels();
const DEFAULT = MODELS.find((m) => m.default);
const DATES = MODELS.find((m) => m.id === 'dates-encdec');
const VIEWPORTS = [['desktop', { width: 1280, height: 800 }], ['phone', { width: 390, height: 844 }]];

let env;
before(async () => {
  env = await setup({ webgpu: true });
  fs.mkdirSync(SHOT_DIR, { recursive: true });
});
after(async () => {
  await env?.close();
});

/** The output box's scroll: {top, height, client, follow, gap (px from the bottom)}. */
const box = (page) => page.$eval('#gen-output', (o) => ({
  top: o.scrollTop, height: o.scrollHeight, client: o.clientHeight, follow: o.dataset.follow,
  gap: o.scrollHeight - o.scrollTop - o.clientHeight,
}));

/** Whether the newest token is inside the output box's visible area. */
const newestInView = (page) => page.$eval('#gen-output', (o) => {
  const t = [...o.querySelectorAll('.tok')].pop();
  if (!t) return false;
  const r = t.getBoundingClientRect();
  const b = o.getBoundingClientRect();
  return r.bottom <= b.bottom + 1 && r.top >= b.top - 1;
});

test('the output follows the newest token; scrolled up it stays put, and back at the bottom it follows again', { timeout: 300_000 }, async () => {
  assertModelFile(assert, DEFAULT.file);
  for (const [tag, viewport] of VIEWPORTS) {
    const { page, context, log } = await openPage(env, '', { viewport });
    try {
      await waitModel(page, DEFAULT.id);
      await setGenerate(page, { prompt: 'ROMEO:\n', temperature: 0.8, seed: 3, max: 250 });
      const out = await generateAndWait(page);
      assert.equal(out.state, 'done', out.error);
      let b = await box(page);
      console.log(`${tag}, ${out.count} tokens at ${out.tps} tokens/s: ${JSON.stringify(b)}`);
      assert.ok(out.count > 150, `${out.count} tokens`);
      assert.ok(b.height > b.client + 20, 'the text overflows the box');
      assert.ok(b.gap <= 4, `the box shows its end (${b.gap}px below)`);
      assert.equal(await newestInView(page), true, 'the newest token is in sight');
      await page.locator('#view-generate').screenshot({ path: path.join(SHOT_DIR, `page-follow-${tag}.png`) });
      if (tag !== 'phone') {
        assertClean(assert, log);
        continue;
      }

      // Again, longer (past the context, with the sliding window: each token re-reads the window, so it streams for
      // a while), and the reader scrolls up while it streams (a mouse wheel over the box): the box stays put.
      await page.setChecked('#gen-slide', true);
      await setGenerate(page, { max: 600 });
      await page.click('#gen-start');
      await page.waitForFunction(() => {
        const o = document.getElementById('gen-output');
        return o.dataset.state === 'running' && o.scrollHeight > o.clientHeight + 60;
      }, null, { timeout: 120_000, polling: 'raf' });
      await page.hover('#gen-output');
      await page.mouse.wheel(0, -5000);
      await page.waitForSelector('#gen-output[data-follow="false"]', { timeout: 10_000 });
      const upAt = await box(page);
      const countUp = Number(await page.getAttribute('#gen-output', 'data-count'));
      await page.waitForFunction(() => ['done', 'stopped', 'error'].includes(document.getElementById('gen-output').dataset.state), null, { timeout: 180_000 });
      b = await box(page);
      const countEnd = Number(await page.getAttribute('#gen-output', 'data-count'));
      console.log(`scrolled up at ${countUp} tokens (top ${upAt.top}); at the end (${countEnd}): ${JSON.stringify(b)}`);
      assert.ok(countEnd > countUp, 'tokens kept coming after the reader scrolled up');
      assert.equal(b.top, upAt.top, 'the box did not move while the reader was reading above');
      assert.ok(b.gap > b.client, 'the end is out of sight, as the reader left it');
      assert.equal(b.follow, 'false');

      // Back to the bottom: it follows again, and a new generation follows from its start.
      await page.mouse.wheel(0, 100_000);
      await page.waitForSelector('#gen-output[data-follow="true"]', { timeout: 10_000 });
      assert.ok((await box(page)).gap <= 4);
      await page.setChecked('#gen-slide', false);
      await setGenerate(page, { max: 250 });
      await generateAndWait(page);
      b = await box(page);
      assert.ok(b.gap <= 4 && b.follow === 'true', `a new generation follows: ${JSON.stringify(b)}`);
      assert.equal(await newestInView(page), true);
      assertClean(assert, log);
    } finally {
      await context.close();
    }
  }
});

test('a prompt typed for one model, kept when the date model is picked: the line under the prompt says so, offers the example, and gives the prompt back', { timeout: 300_000 }, async () => {
  assertModelFile(assert, DATES.file);
  for (const [tag, viewport] of VIEWPORTS) {
    const { page, context, log } = await openPage(env, '', { viewport });
    try {
      await waitModel(page, DEFAULT.id);
      assert.equal(await page.isHidden('#prompt-note'), true, 'no note for the model\u2019s own example');
      const mine = 'JULIET: Wherefore art thou';
      await page.fill('#prompt', mine);
      await page.click('#model-list button[data-model="dates-encdec"]');
      await waitModel(page, DATES.id);
      assert.equal(await page.inputValue('#prompt'), mine, 'what the user typed is never dropped');
      await page.waitForSelector('#prompt-note:not([hidden])');
      const note = await page.locator('#prompt-note').innerText();
      console.log(`${tag}: ${note.replace(/\n/g, ' ')}`);
      assert.match(note, /^This prompt was written for Shakespeare Llama; Dates \(encoder-decoder\) translates dates\.\s*Use its example$/);
      // Right by the prompt: the line starts within a line's height of the box's bottom.
      const gap = await page.evaluate(() => document.getElementById('prompt-note').getBoundingClientRect().top
        - document.getElementById('prompt').getBoundingClientRect().bottom);
      assert.ok(gap >= 0 && gap < 20, `the note is under the prompt box (${gap}px)`);
      await page.locator('#view-generate').screenshot({ path: path.join(SHOT_DIR, `page-prompt-note-${tag}.png`) });

      await page.click('#prompt-use-example');
      assert.equal(await page.inputValue('#prompt'), DATES.prompt, 'the model\u2019s own example from models.json');
      assert.match(await page.locator('#prompt-note').innerText(), /^The prompt is now Dates \(encoder-decoder\)\u2019s example\.\s*Put mine back$/);
      if (tag === 'desktop') {
        const out = await generateAndWait(page);
        assert.equal(out.state, 'done', out.error);
        assert.equal(out.text, '2021-03-03');
      }
      await page.click('#prompt-put-back');
      assert.equal(await page.inputValue('#prompt'), mine, 'the user\u2019s prompt comes back');
      assert.equal(await page.getAttribute('#prompt-note', 'data-kind'), 'other-model');

      // Back to a Shakespeare model: the prompt was written for one, so no note.
      await page.click('#model-list button[data-model="shakespeare-gpt"]');
      await waitModel(page, 'shakespeare-gpt');
      assert.equal(await page.inputValue('#prompt'), mine);
      assert.equal(await page.isHidden('#prompt-note'), true, 'a Shakespeare prompt for a Shakespeare model needs no note');
      assertClean(assert, log);
    } finally {
      await context.close();
    }
  }
});

test('on a phone the prompt and Generate are on the first screen; the Generate card names the model', { timeout: 240_000 }, async () => {
  for (const [tag, viewport] of VIEWPORTS) {
    const { page, context, log } = await openPage(env, '', { viewport });
    try {
      await waitModel(page, DEFAULT.id);
      const at = await page.evaluate(() => ({
        prompt: document.getElementById('prompt').getBoundingClientRect().top,
        generate: document.getElementById('gen-start').getBoundingClientRect().bottom,
        page: document.documentElement.scrollHeight,
        width: document.documentElement.scrollWidth,
      }));
      console.log(`${tag}: prompt at y ${Math.round(at.prompt)}, Generate ends at ${Math.round(at.generate)}, page ${at.page} px`);
      assert.ok(at.generate <= viewport.height, `${tag}: Generate is on the first screen`);
      assert.ok(at.width <= viewport.width, `${tag}: no sideways scrolling`);
      if (tag === 'phone') {
        assert.equal(await page.locator('#gen-model-name').innerText(), DEFAULT.name);
        assert.equal(await page.isVisible('#gen-model'), true);
        await page.click('#gen-start'); // Generate works from the first screen
        await page.waitForSelector('#gen-output[data-state="done"]', { timeout: 120_000 });
      } else {
        assert.equal(await page.isVisible('#gen-model'), false, 'beside the model card, the line is not needed');
      }
      await page.screenshot({ path: path.join(SHOT_DIR, `page-first-screen-${tag}.png`) });
      assertClean(assert, log);
    } finally {
      await context.close();
    }
  }
});

test('Inspect says what a logit lens, each head score and a nat are, names heads L1 H0, and counts "1 token"', { timeout: 240_000 }, async () => {
  for (const [tag, viewport] of VIEWPORTS) {
    const { page, context, log } = await openPage(env, '', { viewport });
    try {
      await waitModel(page, DEFAULT.id);
      await page.fill('#prompt', 'R'); // one token, typed
      await page.waitForFunction(() => /1 token\./.test(document.getElementById('inspect-status')?.textContent ?? ''), null, { timeout: 60_000 });
      assert.equal(await page.locator('#inspect-status').innerText(), 'The prompt, 1 token.');
      await page.fill('#prompt', 'ROMEO:\nWhat light');
      await page.waitForFunction(() => /tokens\./.test(document.getElementById('inspect-status')?.textContent ?? ''), null, { timeout: 60_000 });
      await page.waitForSelector('#inspect-root[data-state="ready"] .head-grids');
      const text = await page.locator('#inspect-root').innerText();
      assert.match(text, /logit lens reads the model\u2019s guess for the next token part-way through/);
      assert.match(text, /Nats measure loss, surprise and entropy with the natural logarithm/);
      const meanings = await page.$$eval('#inspect-detector-meanings li', (lis) => Object.fromEntries(lis.map((li) => [li.dataset.kind, li.textContent])));
      assert.match(meanings.previous_token, /^Previous token: attention from each token to the token just before it\.$/);
      assert.match(meanings.duplicate_token, /^Duplicate token: attention from a token to earlier copies of the same token\.$/);
      assert.match(meanings.induction, /^Induction: .*followed an earlier copy.*about 0\.5 is the most/);
      // The best head of each kind, named as L(layer) H(head) with its score: not "3.1 (0.70)".
      const tops = await page.$$eval('#inspect-top-heads .top-head', (ss) => ss.map((s) => ({ ...s.dataset, text: s.textContent })));
      assert.equal(tops.length, 3);
      for (const t of tops) assert.match(t.text, new RegExp(`^[A-Z][a-z ]+: L${t.layer} H${t.head}, score \\d\\.\\d\\d$`));
      const title = await page.getAttribute('#inspect-root table[data-kind="induction"] button.head-cell[data-layer="1"][data-head="0"]', 'title');
      assert.match(title, /^L1 H0: induction score /);
      // The Attention and Next token views say what they show.
      assert.match(await page.locator('#attention-intro').innerText(), /^How much each token .* in one head/);
      assert.match(await page.locator('#next-intro').innerText(), /^The ten tokens the model finds most likely to come next/);
      await page.locator('#view-inspect').screenshot({ path: path.join(SHOT_DIR, `page-inspect-${tag}.png`) });
      assertClean(assert, log);
    } finally {
      await context.close();
    }
  }
});
