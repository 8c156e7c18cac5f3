// The page with the shipped models (models/*.safetensors, listed in www/models.json), in headless Chromium with
// WebGPU on SwiftShader: the default model loads on open, 40 tokens stream while the main thread stays free,
// Stop works (during prefill and halfway) and the page generates again, every shipped model runs (the date model
// must translate "March 3, 2021" to "2021-03-03"), bad files keep the previous model, screenshots at desktop and
// phone widths, keyboard reachability. A missing model file is a failure, never a skip.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  setup, openPage, assertClean, REPO, shippedModels, assertModelFile, longTaskObserver, waitModel, setGenerate,
  generateAndWait, readOutput, screenshotViews, exportAttentionJson, markEnd, waitPromptAnalysed, FREEZE_MS,
} from './_harness.mjs';

const MODELS = shippedModels();
const DEFAULT = MODELS.find((m) => m.default);

let env;
before(async () => {
  env = await setup({ webgpu: true });
});
after(async () => {
  await env?.close();
});

test('the default model loads on open; 40 tokens stream, decode, and the main thread never freezes', { timeout: 300_000 }, async () => {
  assert.equal(DEFAULT.id, 'shakespeare-llama');
  assertModelFile(assert, DEFAULT.file);
  const { page, context, log } = await openPage(env, '', { initScript: longTaskObserver });
  try {
    await waitModel(page, DEFAULT.id);
    const card = await page.$$eval('#model-table tr', (rows) => Object.fromEntries(rows.map((r) => [r.dataset.field, r.dataset.value])));
    console.log('model card:', JSON.stringify(card));
    assert.equal(card.arch, 'llama');
    assert.equal(Number(card.file_size), fs.statSync(path.join(REPO, DEFAULT.file)).size);
    assert.ok(Number(card.kv_heads) < Number(card.heads), 'the shipped llama uses grouped-query attention');
    // "Run on" is auto: the page measured both paths and runs on the faster (tests/browser/learner.test.mjs).
    assert.equal(card.backend, await page.getAttribute('#device-speed', 'data-chosen'));
    assert.equal(await page.getAttribute(`#model-list button[data-model="${DEFAULT.id}"]`, 'aria-pressed'), 'true');
    // The download went through the progress bar to the end, which is hidden now.
    const size = String(fs.statSync(path.join(REPO, DEFAULT.file)).size);
    assert.equal(await page.getAttribute('#model-progress', 'data-loaded'), size);
    assert.equal(await page.getAttribute('#model-progress', 'data-total'), size);
    assert.equal(await page.isHidden('#model-progress'), true);

    // Tokens view: chips with ids; a character outside the tokenizer's table is flagged.
    await page.fill('#prompt', 'Snow \u2603 falls');
    await page.waitForSelector('#tokens-unknown', { timeout: 30_000 });
    assert.match(await page.locator('#tokens-unknown').innerText(), /"\u2603" at character 5/);
    assert.ok(await page.locator('#tokens-root .chip.unknown').count() >= 1);
    const pieces = await page.$$eval('#tokens-root .chip-piece', (ps) => ps.map((p) => p.textContent).join(''));
    assert.match(pieces, /Snow·/, 'spaces are shown as ·');

    await setGenerate(page, { prompt: 'ROMEO:\nWhat light', temperature: 0.8, topK: 40, topP: 0.95, seed: 7, max: 40 });
    await page.waitForSelector('#gen-start:not([disabled])');
    await waitPromptAnalysed(page); // t0 is the click: the typed prompt's analysis is drawn before it
    const t0 = await markEnd(page);
    await page.click('#gen-start');
    // The output's token count, read in the page at each draw while the run goes on, only grows.
    await page.waitForSelector('#gen-output[data-state="done"]', { timeout: 240_000 });
    const t1 = await page.evaluate(() => window.__genEnd);
    assert.ok(t1 > t0);
    const counts = await page.evaluate(() => window.__drawnCounts);
    console.log(`drawn while running: ${JSON.stringify(counts)}`);
    // On the CPU path 40 tokens can all arrive within one frame and be drawn at once; that the output is drawn while
    // a run goes on is checked over 240 tokens in tests/browser/stream.test.mjs.
    assert.ok(counts.every((n, i) => i === 0 || n >= counts[i - 1]), 'the count only grows');
    const out = await readOutput(page);
    console.log(`generated ${out.count} tokens at ${out.tps} tokens/s (first token ${out.ttft} ms): ${JSON.stringify(out.text)}`);
    assert.equal(out.count, 40);
    assert.ok(out.text.length >= 20, 'the output decodes to text');
    assert.equal(out.text, out.streamed, 'the decoded text equals what was streamed');
    assert.doesNotMatch(out.text, /\uFFFD/, 'no broken characters');
    assert.ok(out.tps > 0);
    assert.match(await page.locator('#gen-stats').innerText(), /first token \d.* · [\d.]+ tokens\/s · 40 tokens/);

    // The main thread: no freeze while generating (FREEZE_MS; the observer sees tasks over 50 ms, printed here).
    const tasks = await page.evaluate(() => window.__longTasks);
    const during = tasks.filter((t) => t.start + t.duration >= t0 && t.start <= t1);
    console.log(`long tasks during generation (${Math.round(t0)}-${Math.round(t1)} ms): ${JSON.stringify(during)}; ` +
      `${await page.evaluate(() => document.body.dataset.genTokenMessages)} token messages`);
    assert.ok(during.every((t) => t.duration <= FREEZE_MS), `a task froze the main thread: ${JSON.stringify(during)}`);

    // After the run, every view knows every step: pick step 5.
    await page.waitForFunction(() => (window.tinyformer.attention()?.rows ?? 0) > 40, null, { timeout: 60_000 });
    await page.click('#gen-output .tok[data-step="5"]');
    await page.waitForSelector('#attention-root[data-step="5"]');
    assert.equal(await page.getAttribute('#next-root li.cand.chosen', 'data-id'), String(out.ids[5]));
    const probs = await page.$$eval('#next-root li.cand', (lis) => lis.map((l) => Number(l.dataset.p)));
    assert.equal(probs.length, 10);
    assert.ok(probs.every((p, i) => i === 0 || p <= probs[i - 1]), 'candidates sorted by probability');
    const later = await page.evaluate(() => performance.now());
    const after = (await page.evaluate(() => window.__longTasks)).filter((t) => t.start > t1 && t.start < later);
    console.log(`long tasks while drawing the analysis: ${JSON.stringify(after)}`);
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});

test('Stop works during prefill and halfway, and the page generates again', { timeout: 300_000 }, async () => {
  assertModelFile(assert, DEFAULT.file);
  // On WebGPU (SwiftShader here, the slower path): a click lands while the first token is still computing.
  const { page, context, log } = await openPage(env, '?backend=gpu');
  try {
    await waitModel(page, DEFAULT.id);
    await setGenerate(page, { prompt: 'KING HENRY:\n', temperature: 0.8, seed: 3, max: 200 });

    // Halfway: wait for a few tokens, stop, and check that no more arrive.
    await page.click('#gen-start');
    await page.waitForFunction(() => Number(document.getElementById('gen-output').dataset.count) >= 4, null, { timeout: 120_000 });
    await page.click('#gen-stop');
    await page.waitForSelector('#gen-output[data-state="stopped"]', { timeout: 30_000 });
    const stopped = await readOutput(page);
    await page.waitForTimeout(1000);
    const later = await readOutput(page);
    console.log(`stopped after ${stopped.count} of 200 tokens: ${JSON.stringify(stopped.text)}`);
    assert.ok(stopped.count >= 4 && stopped.count < 200);
    assert.equal(later.count, stopped.count, 'no tokens after Stop');
    assert.equal(stopped.text, stopped.streamed);

    // At once (during the prefill): at most the token being computed arrives.
    const run = Number(await page.getAttribute('#gen-output', 'data-run'));
    // Stop is clicked in the page the moment it is enabled (the generation has just been sent): a click from
    // here can take longer than a few tokens on a loaded machine.
    await page.evaluate(() => {
      const stopBtn = document.getElementById('gen-stop');
      const obs = new MutationObserver(() => {
        if (!stopBtn.disabled) {
          obs.disconnect();
          stopBtn.click();
        }
      });
      obs.observe(stopBtn, { attributes: true, attributeFilter: ['disabled'] });
    });
    await page.click('#gen-start');
    await page.waitForFunction((n) => {
      const o = document.getElementById('gen-output');
      return Number(o.dataset.run) > n && o.dataset.state === 'stopped';
    }, run, { timeout: 60_000 });
    const early = await readOutput(page);
    console.log(`stopped during prefill after ${early.count} tokens`);
    assert.ok(early.count <= 1);

    // And again, to the end.
    await setGenerate(page, { max: 4 });
    const again = await generateAndWait(page);
    assert.equal(again.state, 'done');
    assert.equal(again.count, 4);
    assert.ok(again.text.length > 0);
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});

test('the date model is one click away and translates "March 3, 2021" to 2021-03-03, with cross-attention', { timeout: 180_000 }, async () => {
  const dates = MODELS.find((m) => m.id === 'dates-encdec');
  assertModelFile(assert, dates.file);
  const { page, context, log } = await openPage(env, '?nomodel=1');
  try {
    await page.click('#model-list button[data-model="dates-encdec"]');
    await waitModel(page, 'dates-encdec');
    const card = await page.$$eval('#model-table tr', (rows) => Object.fromEntries(rows.map((r) => [r.dataset.field, r.dataset.value])));
    assert.equal(card.arch, 'encoder_decoder');
    assert.equal(card.tokenizer, 'chars');
    assert.match(await page.locator('#prompt-label').innerText(), /Source sentence/);
    await setGenerate(page, { prompt: 'March 3, 2021', temperature: 0, max: 12 });
    const out = await generateAndWait(page);
    console.log(`dates: "March 3, 2021" -> ${JSON.stringify(out.text)} (${out.count} tokens, ${out.tps} tokens/s)`);
    assert.equal(out.state, 'done', out.error);
    assert.equal(out.text, '2021-03-03');
    // The three kinds of attention, and the cross-attention rows of the answer sum to 1 over the source.
    await page.waitForFunction(() => window.tinyformer.attention()?.rows === 12, null, { timeout: 60_000 });
    const tabs = await page.$$eval('#attention-root [role=tab]', (ts) => ts.map((t) => t.dataset.kind));
    assert.deepEqual(tabs, ['encoder', 'decoder', 'cross']);
    await page.click('#attn-tab-cross');
    await page.waitForSelector('#attention-root[data-kind="cross"]');
    const { json } = await exportAttentionJson(page);
    assert.equal(json.cols, 13, 'one key per source character');
    assert.deepEqual(json.tokens.keys.join(''), 'March·3,·2021');
    for (const row of json.weights) assert.ok(Math.abs(row.reduce((a, b) => a + b, 0) - 1) <= 1e-4);
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});

test('the induction model continues a repeat, and in Inspect its induction head is on layer 1: ablating it makes the repeat unpredictable again', { timeout: 240_000 }, async () => {
  const ind = MODELS.find((m) => m.id === 'induction-attn');
  assertModelFile(assert, ind.file);
  const side = JSON.parse(fs.readFileSync(path.join(REPO, ind.sidecar), 'utf8'));
  const { page, context, log } = await openPage(env, '?nomodel=1');
  try {
    await page.click('#model-list button[data-model="induction-attn"]');
    await waitModel(page, 'induction-attn');
    // its own prompt, continued greedily as PyTorch did (models/induction-attn.json)
    assert.equal(await page.inputValue('#prompt'), side.prompt);
    await setGenerate(page, { prompt: side.prompt, temperature: 0, max: side.max_new_tokens });
    const out = await generateAndWait(page);
    assert.equal(out.state, 'done', out.error);
    assert.equal(side.prompt + out.text, side.greedy_text, 'the greedy continuation of the repeat');
    // Inspect: Induction test, then the top induction head ablated from its grid cell
    await page.click('#inspect-induction');
    await page.waitForSelector('#inspect-induction-result[data-second]', { timeout: 60_000 });
    const cells = await page.$$eval('button.head-cell[data-kind="induction"]', (bs) => bs.map((b) => ({ ...b.dataset })));
    const top = cells.reduce((a, b) => (Number(b.score) > Number(a.score) ? b : a));
    assert.equal(top.layer, '1', 'the best induction head is on the last layer');
    assert.ok(Number(top.score) >= 0.4, `induction score ${top.score}`);
    const second = Number(await page.getAttribute('#inspect-induction-result', 'data-second'));
    await page.click(`button.head-cell[data-kind="induction"][data-layer="${top.layer}"][data-head="${top.head}"]`);
    await page.click('#inspect-ablate');
    await page.waitForSelector('#inspect-induction-result:not([data-second-ablated=""])', { timeout: 60_000 });
    const ablated = Number(await page.getAttribute('#inspect-induction-result', 'data-second-ablated'));
    console.log(`induction-attn: ${JSON.stringify(out.text)}; head ${top.layer}.${top.head} ${top.score}; repeat ${second.toFixed(3)} -> ${ablated.toFixed(3)} nats ablated`);
    assert.ok(second < 1 && ablated > second + 3, `the repeat's loss ${second} -> ${ablated} with the head ablated`);
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});

test('the Shakespeare models are one click away and run', { timeout: 300_000 }, async () => {
  const shakespeare = MODELS.filter((m) => m.id.startsWith('shakespeare-'));
  for (const m of shakespeare) assertModelFile(assert, m.file);
  const { page, context, log } = await openPage(env, '?nomodel=1');
  try {
    const expected = {
      'shakespeare-llama': { arch: 'llama' },
      'shakespeare-gpt': { arch: 'decoder', experts: '0' },
      'shakespeare-moe': { arch: 'decoder', experts: '4' },
    };
    assert.deepEqual(shakespeare.map((m) => m.id).sort(), Object.keys(expected).sort());
    for (const m of shakespeare) {
      await page.click(`#model-list button[data-model="${m.id}"]`);
      await waitModel(page, m.id);
      const card = await page.$$eval('#model-table tr', (rows) => Object.fromEntries(rows.map((r) => [r.dataset.field, r.dataset.value])));
      assert.equal(card.arch, expected[m.id].arch, m.id);
      if (expected[m.id].experts) assert.equal(card.experts, expected[m.id].experts, m.id);
      assert.notEqual(card.tokenizer, 'none', `${m.id} carries its tokenizer`);
      await setGenerate(page, { prompt: 'ROMEO:\n', temperature: 0, max: 8 });
      const out = await generateAndWait(page);
      console.log(`${m.id}: ${out.count} tokens at ${out.tps} tokens/s: ${JSON.stringify(out.text)}`);
      assert.equal(out.state, 'done', out.error);
      assert.equal(out.count, 8);
      assert.ok(out.text.length > 0);
      assert.equal(out.text, out.streamed);
      if (m.id === 'shakespeare-moe') {
        // The view first shows the prompt's routing, then the whole sequence's once generation ends.
        await page.waitForFunction(() => document.querySelector('#experts-root')?.dataset.state === 'ready' &&
          document.querySelectorAll('#experts-table tbody tr').length > 8, null, { timeout: 60_000 });
        const load = await page.$$eval('#experts-load li', (lis) => lis.map((li) => Number(li.dataset.count)));
        const rows = await page.$$eval('#experts-table tbody tr', (trs) => trs.map((tr) => tr.querySelectorAll('td.ep.chosen').length));
        console.log(`moe layer 0 load: ${load}`);
        assert.equal(load.length, 4);
        assert.ok(rows.length > 8 && rows.every((k) => k === 2), 'top-2 chosen for every token');
        assert.ok(load.reduce((a, b) => a + b, 0) <= rows.length * 2);
      }
    }
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});

test('a truncated checkpoint and a text file give clear errors; the previous model keeps working', { timeout: 240_000 }, async () => {
  assertModelFile(assert, DEFAULT.file);
  const { page, context, log } = await openPage(env, '');
  try {
    await waitModel(page, DEFAULT.id);
    const bytes = fs.readFileSync(path.join(REPO, DEFAULT.file));

    // 1. A truncated checkpoint, through the file input.
    await page.setInputFiles('#model-file', { name: 'truncated.safetensors', mimeType: 'application/octet-stream', buffer: bytes.subarray(0, Math.floor(bytes.length * 0.6)) });
    await page.waitForFunction(() => /truncated\.safetensors/.test(document.getElementById('model-error').textContent), null, { timeout: 60_000 });
    const e1 = await page.locator('#model-error').innerText();
    console.log(`truncated: ${e1}`);
    assert.match(e1, /Could not load truncated\.safetensors: .{10,}/);
    assert.match(e1, /Shakespeare Llama is still loaded/);

    // 2. A text file, dropped on the page (a real drop event with a DataTransfer).
    await page.evaluate(() => {
      const dt = new DataTransfer();
      dt.items.add(new File(['ROMEO: these are notes, not weights\n'], 'notes.txt', { type: 'text/plain' }));
      document.body.dispatchEvent(new DragEvent('dragenter', { dataTransfer: dt, bubbles: true }));
      document.body.dispatchEvent(new DragEvent('dragover', { dataTransfer: dt, bubbles: true, cancelable: true }));
      document.body.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
    });
    await page.waitForFunction(() => /notes\.txt/.test(document.getElementById('model-error').textContent), null, { timeout: 60_000 });
    const e2 = await page.locator('#model-error').innerText();
    console.log(`text file: ${e2}`);
    assert.match(e2, /Could not load notes\.txt: .{10,}/);
    assert.match(e2, /still loaded/);

    // The card still shows the default model, and it still generates.
    assert.equal(await page.getAttribute('#model-card', 'data-model'), DEFAULT.id);
    await setGenerate(page, { prompt: 'ROMEO:\n', temperature: 0, max: 4 });
    const out = await generateAndWait(page);
    assert.equal(out.state, 'done', out.error);
    assert.equal(out.count, 4);
    assert.ok(out.text.length > 0);
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});

test('screenshots at 1280x800 and 390x844; no sideways scrolling on a phone; every control reachable by keyboard', { timeout: 300_000 }, async () => {
  assertModelFile(assert, DEFAULT.file);
  for (const [tag, viewport] of [['desktop', { width: 1280, height: 800 }], ['phone', { width: 390, height: 844 }]]) {
    const { page, context, log } = await openPage(env, '', { viewport });
    try {
      await waitModel(page, DEFAULT.id);
      await setGenerate(page, { prompt: 'ROMEO:\n', temperature: 0.8, seed: 1, max: 6 });
      const out = await generateAndWait(page);
      assert.equal(out.state, 'done');
      await page.waitForFunction(() => (window.tinyformer.attention()?.rows ?? 0) > 6, null, { timeout: 60_000 });
      await page.click('#gen-output .tok[data-step="3"]');
      await page.click('#bpe-train');
      await page.waitForSelector('#bpe-root[data-state="ready"]', { timeout: 30_000 });
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 0, `${tag}: the page scrolls sideways by ${overflow}px`);
      await screenshotViews(page, tag);

      if (tag === 'desktop') {
        await page.waitForSelector('#inspect-root[data-state="ready"] .head-grids', { timeout: 60_000 });
        // One round of Tab through the whole page, from the top until focus comes back to an element it has seen:
        // every Tab stop once, counted by what it is.
        await page.evaluate(() => document.activeElement?.blur());
        const stops = [];
        for (let i = 0; i < 400; i++) {
          await page.keyboard.press('Tab');
          const { id, again } = await page.evaluate(() => {
            const el = document.activeElement;
            if (!el || el === document.body) return { id: null, again: false };
            const again = el.dataset.tabRound === '1';
            el.dataset.tabRound = '1';
            return { again, id: el.id || (el.dataset.model ? `model:${el.dataset.model}` : el.className ? `.${String(el.className).split(' ')[0]}` : el.tagName) };
          });
          if (again) break;
          if (id) stops.push(id);
        }
        const seen = new Set(stops);
        const want = ['model:shakespeare-llama', 'model:dates-encdec', 'model-file', 'prompt', 'gen-temperature', 'gen-top-k',
          'gen-top-p', 'gen-seed', 'gen-max', 'gen-kv', 'gen-start', '.tok', 'attn-tab-decoder', '.thumb', 'attn-heatmap',
          'attn-export-png', 'attn-export-json', 'attn-step', '.hv-tok', 'inspect-run', '.head-cell', '.entropy-cell',
          'masks-seq-len', 'masks-seed-convention', 'bpe-text', 'bpe-train', 'bpe-step', 'selftest-run'];
        const missing = want.filter((w) => !seen.has(w));
        assert.deepEqual(missing, [], `reached by Tab: ${[...seen].join(' ')}`);
        // Grids are one Tab stop each, with the arrow keys inside (was 153 stops: 24 thumbnails, 72 head scores and
        // every generated token were one each).
        const n = (id) => stops.filter((s) => s === id).length;
        console.log(`${stops.length} Tab stops; thumbnails ${n('.thumb')}, head scores ${n('.head-cell')}, entropy ${n('.entropy-cell')}, tokens ${n('.tok')}, head view ${n('.hv-tok')}`);
        assert.equal(n('.thumb'), 1, 'the head thumbnails are one Tab stop');
        assert.equal(n('.head-cell'), 3, 'each of the three head-score grids is one Tab stop');
        assert.equal(n('.entropy-cell'), 1, 'the entropy grid is one Tab stop');
        assert.equal(n('.tok'), 1, 'the generated tokens are one Tab stop');
        assert.equal(n('.hv-tok'), 1, 'the head view\u2019s query tokens are one Tab stop');
        const groups = [...new Set(stops)].filter((id) => n(id) > 1).map((id) => `${id} ${n(id)}`);
        assert.ok(stops.length < 90, `${stops.length} Tab stops; repeated: ${groups.join(', ')}`);

        // Inside a grid, by keyboard only: arrows move, Enter or Space presses.
        const heads = Number(await page.locator('#attn-thumbs .thumb[data-layer="0"]').count());
        await page.focus('#attn-thumbs .thumb[tabindex="0"]');
        const start = await page.evaluate(() => ({ ...document.activeElement.dataset }));
        await page.keyboard.press('ArrowDown');
        assert.deepEqual(await page.evaluate(() => ({ ...document.activeElement.dataset })),
          { layer: String(Number(start.layer) + 1), head: start.head }, 'ArrowDown: the same head one layer down');
        await page.keyboard.press('ArrowRight');
        await page.keyboard.press('Enter');
        const want1 = { layer: String(Number(start.layer) + 1), head: String((Number(start.head) + 1) % heads) };
        await page.waitForSelector(`#attention-root[data-layer="${want1.layer}"][data-head="${want1.head}"]`);
        assert.equal(await page.getAttribute(`.thumb[data-layer="${want1.layer}"][data-head="${want1.head}"]`, 'aria-pressed'), 'true');
        assert.equal(await page.locator('#attn-thumbs .thumb[tabindex="0"]').count(), 1);

        await page.focus('#gen-output .tok[tabindex="0"]');
        assert.equal(await page.evaluate(() => document.activeElement.dataset.step), '3', 'the selected token is the stop');
        await page.keyboard.press('ArrowRight');
        await page.keyboard.press('Enter');
        await page.waitForSelector('#gen-output .tok[data-step="4"][aria-current="step"]');
        await page.waitForSelector('#attention-root[data-step="4"]');
        await page.keyboard.press('Home');
        assert.equal(await page.evaluate(() => document.activeElement.dataset.step), '0');

        await page.focus('#inspect-root table[data-kind="induction"] button.head-cell[tabindex="0"]');
        await page.keyboard.press('ArrowRight');
        await page.keyboard.press(' ');
        const cell = await page.evaluate(() => ({ ...document.activeElement.dataset, pressed: document.activeElement.getAttribute('aria-pressed') }));
        assert.deepEqual([cell.layer, cell.head, cell.pressed], ['0', '1', 'true'], 'Space chose L0 H1 for ablation');
        assert.equal(await page.locator('#inspect-chosen').innerText(), 'Chosen: L0 H1');
        await page.focus('#inspect-entropy td.entropy-cell[tabindex="0"]');
        await page.keyboard.press('ArrowDown');
        await page.keyboard.press('Enter');
        await page.waitForSelector('#inspect-entropy-strip[data-layer="1"][data-head="0"]');
      }
      assertClean(assert, log);
    } finally {
      await context.close();
    }
  }
});

test('a lost GPU device: the page says so, offers a reload, and the reload keeps the prompt', { timeout: 240_000 }, async () => {
  const { page, context, log } = await openPage(env, '?backend=gpu'); // the model must run on the GPU to lose it
  try {
    await waitModel(page, 'shakespeare-llama');
    await setGenerate(page, { prompt: 'KING:\n', temperature: 0, max: 4 });
    await page.evaluate(() => window.tinyformer.loseDevice());
    const out = await generateAndWait(page);
    assert.equal(out.state, 'error', 'generation on a destroyed device fails');
    await page.waitForSelector('#gpu-lost-reload', { timeout: 30_000 });
    const notice = await page.locator('#worker-notice').innerText();
    console.log(`device lost: ${notice.split('\n')[0]}`);
    assert.match(notice, /GPU device was lost/);
    assert.equal(await page.inputValue('#prompt'), 'KING:\n', 'the prompt is still there');
    await Promise.all([page.waitForEvent('load'), page.click('#gpu-lost-reload')]);
    await waitModel(page, 'shakespeare-llama');
    assert.equal(await page.inputValue('#prompt'), 'KING:\n', 'the reload brings the prompt back');
    await setGenerate(page, { prompt: 'KING:\n', temperature: 0, max: 4 });
    const again = await generateAndWait(page);
    assert.equal(again.state, 'done', again.error);
    assert.equal(again.count, 4);
    assertClean(assert, log, { allow: [/lost|destroyed|Destroyed/i] });
  } finally {
    await context.close();
  }
});
