// The page as a learner sees it, driven from the page's own UI in headless Chromium (SwiftShader):
// generated text keeps its line breaks; views wait visibly for the analysis and never show "undefined"; the
// context limit is said and a sliding window keeps going; the page measures both compute paths and uses the
// faster; long sequences stay readable in the heatmap; and the smaller defects (experts focus row, masks at
// 1280 px, stale error banners, unknown characters, the BPE vocabulary size).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { setup, openPage, assertClean, waitModel, setGenerate, generateAndWait, readOutput, setMasks, SHOT_DIR } from './_harness.mjs';

let env;
before(async () => {
  env = await setup({ webgpu: true });
});
after(async () => {
  await env?.close();
});

function shot(page, name) {
  fs.mkdirSync(SHOT_DIR, { recursive: true });
  return page.screenshot({ path: path.join(SHOT_DIR, `learner-${name}.png`), fullPage: false });
}

/** Records, in the page, any moment at which a view's text contains "undefined" or "NaN". */
function watchForUndefined() {
  window.__badText = [];
  window.__analysingTexts = [];
  const ids = ['gen-output', 'attention-root', 'next-root', 'experts-root', 'gen-end', 'gen-stats'];
  const check = () => {
    for (const id of ids) {
      const t = document.getElementById(id)?.textContent ?? '';
      if (/\bundefined\b|\bNaN\b/.test(t)) window.__badText.push(`${id}: ${t.slice(0, 200)}`);
    }
    const a = document.getElementById('attention-root')?.textContent ?? '';
    const m = a.match(/Analysing the \d+ generated tokens?/);
    if (m && window.__analysingTexts.at(-1) !== m[0]) window.__analysingTexts.push(m[0]);
  };
  // And every change of a view's data-state, in order: "gen-output:done", "experts-root:analysing", ...
  window.__states = [];
  const views = ['gen-output', 'attention-root', 'next-root', 'experts-root'];
  const record = (muts) => {
    for (const m of muts) {
      if (views.includes(m.target.id)) window.__states.push(`${m.target.id}:${m.target.dataset.state}`);
    }
  };
  const start = () => {
    new MutationObserver(check).observe(document.body, { subtree: true, childList: true, characterData: true });
    new MutationObserver(record).observe(document.body, { subtree: true, attributes: true, attributeFilter: ['data-state'] });
  };
  if (document.body) start();
  else document.addEventListener('DOMContentLoaded', start);
}

test('generated text keeps its line breaks; tokens are focusable spans that select their step', { timeout: 300_000 }, async () => {
  const { page, context, log } = await openPage(env, '?model=models/shakespeare-gpt.safetensors');
  try {
    await waitModel(page, 'shakespeare-gpt');
    await setGenerate(page, { prompt: 'ROMEO:\n', temperature: 0, max: 60, kv: true });
    const out = await generateAndWait(page);
    assert.equal(out.state, 'done');
    assert.equal(out.count, 60);
    console.log(`greedy text: ${JSON.stringify(out.text)}`);
    assert.match(out.text, /\n/, 'this prompt makes the model write newlines');
    const rendered = await page.$eval('#gen-output .gen-tokens', (el) => el.innerText);
    assert.deepEqual(rendered.split('\n'), out.text.split('\n'), 'the rendered lines are the decoded lines');
    // The prompt keeps its newline too: the whole box reads as prompt + text.
    assert.equal(await page.$eval('#gen-output', (el) => el.innerText), `ROMEO:\n${out.text}`);
    // Tokens: inline spans with role="button", focusable; the line breaks come from the text, not from boxes. The
    // tokens are one Tab stop (a roving tabindex: one token 0, the others -1; arrow keys move inside).
    const toks = await page.$$eval('#gen-output .tok', (ts) => ts.map((t) => ({
      tag: t.tagName, role: t.getAttribute('role'), tabindex: t.getAttribute('tabindex'), display: getComputedStyle(t).display,
    })));
    assert.equal(toks.length, 60);
    for (const { tabindex, ...t } of toks) {
      assert.deepEqual(t, { tag: 'SPAN', role: 'button', display: 'inline' });
      assert.ok(tabindex === '0' || tabindex === '-1', `tabindex ${tabindex}`);
    }
    assert.equal(toks.filter((t) => t.tabindex === '0').length, 1, 'one Tab stop for the whole output');
    // Keyboard: focus step 4 and press Enter, then step 7 and press Space.
    await page.focus('#gen-output .tok[data-step="4"]');
    await page.keyboard.press('Enter');
    await page.waitForSelector('#attention-root[data-step="4"]', { timeout: 60_000 });
    assert.equal(await page.getAttribute('#gen-output .tok[data-step="4"]', 'aria-current'), 'step');
    await page.focus('#gen-output .tok[data-step="7"]');
    await page.keyboard.press('Space');
    await page.waitForSelector('#attention-root[data-step="7"]');
    assert.equal(await page.getAttribute('#next-root li.cand.chosen', 'data-id'), String(out.ids[7]));
    await page.locator('#view-generate').screenshot({ path: path.join(SHOT_DIR, 'learner-newlines-desktop.png') });
    await page.setViewportSize({ width: 390, height: 844 });
    await page.locator('#view-generate').screenshot({ path: path.join(SHOT_DIR, 'learner-newlines-phone.png') });
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});

test('after a generation the views say "analysing" until the analysis lands; streaming steps never show undefined', { timeout: 300_000 }, async () => {
  const { page, context, log } = await openPage(env, '', { initScript: watchForUndefined });
  try {
    await waitModel(page, 'shakespeare-llama');
    await page.waitForSelector('#attention-root[data-state="ready"]', { timeout: 60_000 }); // the prompt's analysis
    await setGenerate(page, { prompt: 'ROMEO:\nWhat light', temperature: 0.8, topK: 40, topP: 0.95, seed: 3, max: 40 });
    await page.click('#gen-start');
    // While streaming: attention waits, the Next token view works from what the sampler reported.
    await page.waitForFunction(() => Number(document.getElementById('gen-output').dataset.count) >= 3, null, { timeout: 120_000 });
    const during = await page.evaluate(() => ({
      attention: document.getElementById('attention-root').dataset.state,
      next: document.getElementById('next-root').dataset.state,
      out: document.getElementById('gen-output').dataset.state,
    }));
    if (during.out === 'running') assert.deepEqual(during, { attention: 'generating', next: 'generating', out: 'running' });
    await page.click('#gen-output .tok[data-step="1"]');
    await page.waitForSelector('#next-root[data-state="ready"] li.cand.chosen', { timeout: 30_000 });
    const streamedId = await page.getAttribute('#gen-output .tok[data-step="1"]', 'data-id');
    assert.equal(await page.getAttribute('#next-root li.cand.chosen', 'data-id'), streamedId);
    assert.match(await page.locator('#next-title').innerText(), /^Step 1: the candidates the sampler saw/);
    // The moment the output says "done", the attention view already says it is analysing: read from the
    // page's record of every state change, in order (polling could miss it: on the fast CPU path the analysis
    // can land before the next frame).
    await page.waitForSelector('#gen-output[data-state="done"]', { timeout: 240_000 });
    const states = await page.evaluate(() => window.__states);
    const stateAt = (i, id) => states.slice(0, i).filter((x) => x.startsWith(`${id}:`)).pop();
    const done = states.indexOf('gen-output:done');
    assert.ok(done > 0, JSON.stringify(states));
    assert.equal(stateAt(done, 'attention-root'), 'attention-root:analysing', JSON.stringify(states));
    // A step selected while streaming keeps the candidates the sampler reported through "done"; if the
    // generation ended before the click landed, the view waited for the analysis like the others.
    const clicked = states.indexOf('next-root:ready', states.indexOf('next-root:generating'));
    assert.equal(stateAt(done, 'next-root'), clicked >= 0 && clicked < done ? 'next-root:ready' : 'next-root:analysing', JSON.stringify(states));
    assert.ok((await page.evaluate(() => window.__analysingTexts)).includes('Analysing the 40 generated tokens'));
    // Then the analysis lands: every view is ready, on this run (41 + prompt rows), step 1 still selected.
    await page.waitForSelector('#attention-root[data-state="ready"][data-step="1"]', { timeout: 120_000 });
    const rows = await page.evaluate(() => window.tinyformer.attention().rows);
    const promptLen = Number(await page.getAttribute('#tokens-root', 'data-count'));
    assert.equal(rows, promptLen + 40);
    assert.match(await page.locator('#attn-step-label').innerText(), /^step 1: ".*" was chosen by query row \d+/);

    // A second run with nothing selected: the Next token view waits too.
    await page.click('#attn-step-all');
    await page.waitForSelector('#attention-root[data-step=""]');
    await setGenerate(page, { max: 12 });
    await page.click('#gen-start');
    const atDone2 = await page.waitForFunction((n) => {
      const out = document.getElementById('gen-output');
      if (out.dataset.state !== 'done' || Number(out.dataset.run) < n) return false;
      return {
        attention: document.getElementById('attention-root').dataset.state,
        next: document.getElementById('next-root').dataset.state,
        rows: window.tinyformer.attention()?.rows,
      };
    }, 2, { timeout: 240_000, polling: 'raf' }).then((h) => h.jsonValue());
    // At "done" each view either still says it is analysing or already shows this run's analysis (on the
    // fast CPU path the analysis of 12 tokens can land within the frame): never the previous run.
    console.log(`at done (2nd run): ${JSON.stringify(atDone2)}`);
    assert.ok(['analysing', 'ready'].includes(atDone2.attention), JSON.stringify(atDone2));
    assert.ok(['analysing', 'ready'].includes(atDone2.next), JSON.stringify(atDone2));
    if (atDone2.attention === 'ready') assert.equal(atDone2.rows, promptLen + 12, 'a ready view shows this run');
    await page.waitForSelector('#next-root[data-state="ready"]', { timeout: 120_000 });
    assert.deepEqual(await page.evaluate(() => window.__badText), [], 'no view ever showed undefined or NaN');
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});

test('MoE experts: analysing state after generation, and the selected token\u2019s row is highlighted', { timeout: 240_000 }, async () => {
  const { page, context, log } = await openPage(env, '?model=tests/fixtures/models/moe_a.safetensors', { initScript: watchForUndefined });
  try {
    await waitModel(page, 'moe_a.safetensors');
    await setGenerate(page, { prompt: '1 5 9 13', temperature: 0, max: 8 });
    await page.waitForSelector('#gen-start:not([disabled])');
    await page.click('#gen-start');
    // First the generation ends, then the experts' analysis lands (waiting for "ready" alone could match
    // the prompt's analysis before the click took effect).
    await page.waitForSelector('#gen-output[data-state="done"]', { timeout: 120_000 });
    await page.waitForSelector('#experts-root[data-state="ready"]', { timeout: 60_000 });
    // The order the views changed state in: experts waits (generating, analysing) until after "done".
    const states = await page.evaluate(() => window.__states);
    const stateAt = (i, id) => states.slice(0, i).filter((x) => x.startsWith(`${id}:`)).pop();
    const done = states.indexOf('gen-output:done');
    assert.ok(done > 0, JSON.stringify(states));
    assert.equal(stateAt(done, 'experts-root'), 'experts-root:analysing', JSON.stringify(states));
    assert.ok(states.indexOf('experts-root:generating') < states.indexOf('experts-root:analysing'), JSON.stringify(states));
    assert.ok(states.lastIndexOf('experts-root:ready') > done, JSON.stringify(states));
    await page.waitForSelector('#experts-root[data-state="ready"]', { timeout: 60_000 });
    await page.click('#gen-output .tok[data-step="2"]');
    // Step 2 was chosen by query row 4 + 2 - 1 = 5.
    await page.waitForSelector('#experts-root[data-focus="5"]');
    // A short sequence (12 tokens) needs no zoom: the heatmap's window controls are not shown.
    assert.equal(await page.isHidden('#attn-zoom-bar'), true);
    const focus = await page.$eval('#experts-table tr.focus', (tr) => ({
      token: tr.dataset.token, current: tr.getAttribute('aria-current'),
      bg: getComputedStyle(tr.querySelector('th')).backgroundColor,
    }));
    assert.equal(focus.token, '5');
    assert.equal(focus.current, 'true');
    assert.notEqual(focus.bg, 'rgba(0, 0, 0, 0)', 'the row label is filled, not only recoloured');
    assert.equal(await page.locator('#experts-table tr.focus').count(), 1);
    await page.locator('#view-experts').screenshot({ path: path.join(SHOT_DIR, 'learner-experts-focus.png') });
    assert.deepEqual(await page.evaluate(() => window.__badText), []);
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});

const SPEECH = 'ROMEO:\nBut, soft! what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n' +
  'Arise, fair sun, and kill the envious moon,\nWho is already sick and pale with grief,\n' +
  'That thou her maid art far more fair than she:\n';

/** The longest prefix of SPEECH repeated whose token count is at most `n` (counted by the loaded model's tokenizer). */
async function promptOfTokens(page, n) {
  return page.evaluate(async ({ speech, n }) => {
    const text = speech.repeat(40);
    let lo = 1;
    let hi = text.length;
    const count = async (k) => (await window.tinyformer.call('tokenize', { text: text.slice(0, k) })).ids.length;
    while (lo < hi) {
      const mid = Math.ceil((lo + hi) / 2);
      if (await count(mid) <= n) lo = mid;
      else hi = mid - 1;
    }
    return { text: text.slice(0, lo), tokens: await count(lo) };
  }, { speech: SPEECH, n });
}

test('the context limit: generation says why it stopped; a sliding window keeps going; an over-long prompt can keep its tail', { timeout: 300_000 }, async () => {
  const { page, context, log } = await openPage(env, '', { initScript: watchForUndefined });
  try {
    await waitModel(page, 'shakespeare-llama');
    const ctx = Number(await page.$eval('#model-table tr[data-field="context"]', (tr) => tr.dataset.value));
    assert.equal(ctx, 256);
    // 1. A prompt 20 tokens short of the context, 80 new tokens asked, no window: 20 come, and the page says why.
    const p = await promptOfTokens(page, ctx - 20);
    assert.equal(p.tokens, ctx - 20);
    await setGenerate(page, { prompt: p.text, temperature: 0, max: 80, kv: true });
    await page.setChecked('#gen-slide', false);
    const out = await generateAndWait(page);
    assert.equal(out.state, 'done');
    assert.equal(out.count, 20);
    assert.equal(await page.getAttribute('#gen-output', 'data-reason'), 'context');
    const end = await page.locator('#gen-end').innerText();
    console.log(`end note: ${end}`);
    assert.match(end, /Stopped: the model\u2019s context is 256 tokens \(236 in the prompt \+ 20 generated\)/);
    assert.match(end, /Sliding window/);

    // 2. The same with the sliding window: all 30 asked come; from step 20 on the model reads the newest 255.
    await page.setChecked('#gen-slide', true);
    await setGenerate(page, { max: 30 });
    const slid = await generateAndWait(page);
    assert.equal(slid.state, 'done');
    assert.equal(slid.count, 30);
    assert.equal(await page.getAttribute('#gen-output', 'data-reason'), 'max_new_tokens');
    const end2 = await page.locator('#gen-end').innerText();
    console.log(`end note (window): ${end2}`);
    assert.match(end2, /From step 20 on, .* predicted from the newest 255 tokens only .* forgot the first 10\)/);
    // The views say which tokens the model saw: the analysis covers the newest 256 of 266.
    await page.waitForSelector('#attention-root[data-state="ready"]', { timeout: 120_000 });
    assert.equal((await page.evaluate(() => window.tinyformer.attention())).rows, 256);
    assert.match(await page.locator('#attn-window-note').innerText(), /266 tokens .* context is 256: these maps cover tokens 10 to 265/);
    await page.click('#gen-output .tok[data-step="25"]');
    await page.waitForSelector('#attention-root[data-step="25"]');
    assert.match(await page.locator('#next-title').innerText(), /Step 25: .* The model read tokens 6 to 260 \(the sliding window\)/);
    assert.match(await page.locator('#attn-step-label').innerText(), /^step 25: ".*" was chosen by query row 250 /);

    // 3. A prompt longer than the context, window off: refused, with "Keep the last 255 tokens" offered.
    const long = await promptOfTokens(page, ctx + 30);
    assert.equal(long.tokens, ctx + 30);
    await page.setChecked('#gen-slide', false);
    await setGenerate(page, { prompt: long.text, max: 6 });
    await page.click('#gen-start');
    await page.waitForSelector('#gen-error:not([hidden]) #gen-keep-last');
    assert.match(await page.locator('#gen-error').innerText(), /The prompt has 286 tokens and the model\u2019s context is 256/);
    assert.equal(await page.locator('#gen-keep-last').innerText(), 'Keep the last 255 tokens');
    const run = Number(await page.getAttribute('#gen-output', 'data-run'));
    await page.click('#gen-keep-last');
    await page.waitForFunction((n) => {
      const o = document.getElementById('gen-output');
      return Number(o.dataset.run) > n && o.dataset.state === 'done';
    }, run, { timeout: 120_000 });
    const kept = await readOutput(page);
    assert.equal(kept.count, 6);
    assert.equal(await page.isHidden('#gen-error'), true, 'the refusal is gone once the generation ran');
    assert.equal(await page.isChecked('#gen-slide'), true, 'keeping the tail turns the sliding window on');
    assert.match(await page.locator('#gen-end').innerText(), /The prompt was cut to its last 255 tokens \(the first 31 do not fit/);
    // The Tokens view strikes out the 31 the model never read.
    assert.equal(await page.locator('#tokens-root .chip.cut').count(), 31);
    assert.equal(await page.getAttribute('#tokens-root .chip.cut >> nth=30', 'data-index'), '30');
    assert.match(await page.locator('#tokens-cut').innerText(), /The first 31 tokens .* do not fit the model\u2019s context/);
    await page.locator('#view-generate').screenshot({ path: path.join(SHOT_DIR, 'learner-context-desktop.png') });
    assert.deepEqual(await page.evaluate(() => window.__badText), []);
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});

/** Hovers the heatmap cell (i, j) (absolute indices) and returns the tooltip's text. */
async function hoverCell(page, i, j) {
  await page.locator('#attn-heatmap').scrollIntoViewIfNeeded();
  const g = await page.$eval('#attn-heatmap', (c) => {
    const [r0, r1, c0, c1] = c.dataset.view.split(',').map(Number);
    const r = c.getBoundingClientRect();
    return { r0, r1, c0, c1, x: r.left, y: r.top, scale: r.width / parseFloat(c.style.width) };
  });
  const width = await page.$eval('#attn-heatmap', (c) => parseFloat(c.style.width));
  const cell = (width - 84 - 8) / (g.c1 - g.c0);
  await page.mouse.move(g.x + (84 + (j - g.c0 + 0.5) * cell) * g.scale, g.y + (84 + (i - g.r0 + 0.5) * cell) * g.scale);
  await page.waitForSelector('#attn-tooltip:not([hidden])');
  return page.locator('#attn-tooltip').innerText();
}

test('long sequences: every k-th token labelled, a zoomed window that follows the selected step, phone layout at full context', { timeout: 300_000 }, async () => {
  const { page, context, log } = await openPage(env, '', { initScript: watchForUndefined });
  try {
    await waitModel(page, 'shakespeare-llama');
    const p = await promptOfTokens(page, 210);
    await setGenerate(page, { prompt: p.text, temperature: 0, max: 46, kv: true });
    await page.setChecked('#gen-slide', false);
    const out = await generateAndWait(page);
    assert.equal(out.count, 46); // 256 tokens: the full context
    await page.waitForSelector('#attention-root[data-state="ready"]', { timeout: 120_000 });
    // The whole sequence at desktop width: labels on every k-th token (k > 1), none dropped.
    const whole = await page.$eval('#attn-heatmap', (c) => ({ ...c.dataset }));
    console.log(`whole: view ${whole.view}, every ${whole.labelEvery}, ${whole.rowLabels.split(',').length} row labels`);
    assert.equal(whole.view, '0,256,0,256');
    const k = Number(whole.labelEvery);
    assert.ok(k > 1 && k <= 20, `label every ${k}`);
    const rowLabels = whole.rowLabels.split(',').map(Number);
    const colLabels = whole.colLabels.split(',').map(Number);
    assert.deepEqual(rowLabels, Array.from({ length: Math.ceil(256 / k) }, (_, i) => i * k));
    assert.deepEqual(colLabels, rowLabels);
    // The full detail stays in the tooltip: any cell, labelled or not.
    assert.match(await hoverCell(page, 233, 101), /^query 233 ".*" → key 101 ".*": (\d\.\d{4}|blocked)/);
    await page.locator('#view-attention').screenshot({ path: path.join(SHOT_DIR, 'learner-long-desktop.png') });

    // Select step 30 (query row 210 + 30 - 1 = 239), then zoom to 32 tokens: the window holds that row.
    await page.click('#gen-output .tok[data-step="30"]');
    await page.waitForSelector('#attention-root[data-step="30"]');
    assert.equal(await page.getAttribute('#attn-heatmap', 'data-focus-row'), '239');
    assert.equal(await page.isVisible('#attn-zoom-bar'), true);
    await page.selectOption('#attn-zoom', '32');
    const [r0, r1] = (await page.getAttribute('#attention-root', 'data-window')).split(',').map(Number);
    assert.equal(r1 - r0, 32);
    assert.ok(r0 <= 239 && 239 < r1, `window ${r0}..${r1} holds row 239`);
    const zoomed = await page.$eval('#attn-heatmap', (c) => ({ ...c.dataset }));
    assert.equal(zoomed.labelEvery, '1', 'a 32-token window labels every token');
    assert.equal(zoomed.rowLabels.split(',').length, 32);
    assert.equal(zoomed.focusRow, '239');
    // Scroll the window away, then pick step 5 (row 214): the window follows.
    await page.$eval('#attn-window', (el) => { el.value = '0'; el.dispatchEvent(new Event('input', { bubbles: true })); });
    assert.equal(await page.getAttribute('#attention-root', 'data-window'), '0,32');
    await page.click('#gen-output .tok[data-step="5"]');
    await page.waitForSelector('#attention-root[data-step="5"]');
    const [s0, s1] = (await page.getAttribute('#attention-root', 'data-window')).split(',').map(Number);
    assert.ok(s0 <= 214 && 214 < s1, `window ${s0}..${s1} holds row 214`);
    assert.match(await hoverCell(page, 214, 200), /^query 214 /);
    // The head view shows the selected query row inside its scroll box.
    const hv = await page.$eval('#attn-headview', (el) => {
      const box = el.querySelector('.hv-scroll').getBoundingClientRect();
      const tok = el.querySelector('.hv-tok.active').getBoundingClientRect();
      return { row: el.dataset.row, inside: tok.top >= box.top && tok.bottom <= box.bottom };
    });
    assert.deepEqual(hv, { row: '214', inside: true });

    // Phone: the heatmap fits the screen as a window of the sequence, the page never scrolls sideways.
    await page.setViewportSize({ width: 390, height: 844 });
    await page.selectOption('#attn-zoom', 'auto');
    await page.waitForTimeout(400); // the view redraws on resize after 150 ms
    const phone = await page.evaluate(() => {
      const c = document.getElementById('attn-heatmap');
      return {
        overflow: document.documentElement.scrollWidth - window.innerWidth,
        canvasRight: c.getBoundingClientRect().right,
        window: document.getElementById('attention-root').dataset.window,
        every: c.dataset.labelEvery,
      };
    });
    console.log(`phone: ${JSON.stringify(phone)}`);
    assert.ok(phone.overflow <= 0, `the page scrolls sideways by ${phone.overflow}px`);
    assert.ok(phone.canvasRight <= 390);
    const [p0, p1] = phone.window.split(',').map(Number);
    assert.ok(p1 - p0 < 256 && p0 <= 214 && 214 < p1, `phone window ${phone.window}`);
    await page.locator('#view-attention').screenshot({ path: path.join(SHOT_DIR, 'learner-long-phone.png') });
    assert.deepEqual(await page.evaluate(() => window.__badText), []);
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});

test('honest speed: both paths measured at load, the faster one used, both figures shown, the user can override; KV cache off says why it is slow', { timeout: 300_000 }, async () => {
  const { page, context, log } = await openPage(env, '');
  try {
    await waitModel(page, 'shakespeare-llama');
    await page.waitForSelector('#device-speed:not([hidden])');
    const rows = await page.$$eval('#device-speed-table tr', (trs) => trs.map((tr) => ({ path: tr.dataset.path, tps: Number(tr.dataset.tps), text: tr.innerText })));
    const summary = await page.locator('#device-speed-summary').innerText();
    console.log(`speed: ${JSON.stringify(rows)} | ${summary}`);
    assert.deepEqual(rows.map((r) => r.path), ['gpu', 'cpu'], 'both paths measured');
    for (const r of rows) assert.ok(r.tps > 0 && Number.isFinite(r.tps), `${r.path}: ${r.text}`);
    // The choice follows the displayed numbers, whichever path wins on this machine.
    const faster = rows[0].tps > rows[1].tps ? 'gpu' : 'cpu';
    assert.equal(await page.getAttribute('#device-speed', 'data-chosen'), faster);
    assert.equal(await page.getAttribute('#device-speed', 'data-choice'), 'auto');
    assert.equal(await page.getAttribute('#model-card', 'data-backend'), faster);
    assert.equal(await page.locator(`#device-speed-table tr[data-path="${faster}"] .badge`).innerText(), 'in use');
    assert.match(summary, new RegExp(`running on ${faster === 'gpu' ? 'WebGPU' : 'the CPU path'}, [\\d.]+× as fast as`));
    assert.match(await page.locator('#device-speed-choice').innerText(), /^The page measured both and uses the faster\./);
    // The generation stats name the path in use.
    await setGenerate(page, { prompt: 'ROMEO:\n', temperature: 0, max: 8, kv: true });
    await generateAndWait(page);
    assert.match(await page.locator('#gen-stats').innerText(), new RegExp(`· ${faster === 'gpu' ? 'WebGPU' : 'CPU'}$`));
    await page.locator('#view-device').screenshot({ path: path.join(SHOT_DIR, 'learner-speed-desktop.png') });

    // Override: the slower path, on the user's word; the page says it was not the faster one.
    const slower = faster === 'gpu' ? 'cpu' : 'gpu';
    await page.selectOption('#model-backend', slower);
    await page.waitForSelector(`#model-card[data-backend="${slower}"]`, { timeout: 60_000 });
    await page.waitForSelector(`#device-speed[data-choice="${slower}"][data-chosen="${slower}"]`);
    assert.match(await page.locator('#device-speed-summary').innerText(), /as you chose \((WebGPU|the CPU path) was faster here\)/);
    // WebGPU is there and the user did choose: the page says so, and how to let it choose again.
    assert.match(await page.locator('#device-speed-choice').innerText(), /^You chose this path in “Run on” \(Model view\); set it to “the faster path, measured here” to let the page choose\.$/);
    const again = await generateAndWait(page);
    assert.equal(again.state, 'done');
    assert.match(await page.locator('#gen-stats').innerText(), new RegExp(`· ${slower === 'gpu' ? 'WebGPU' : 'CPU'}$`));
    // Tokens chained on the GPU: WebGPU generation submits more than one token at a time;
    // the CPU path has no submissions to chain.
    const kUsed = Number(await page.getAttribute('body', 'data-tokens-per-submit'));
    if (slower === 'gpu') assert.ok(kUsed > 1, `WebGPU generation used K = ${kUsed}`);
    else assert.equal(kUsed, 1);
    // Back to auto: the same measurement decides (no second probe), the faster path again.
    await page.selectOption('#model-backend', 'auto');
    await page.waitForSelector(`#model-card[data-backend="${faster}"]`, { timeout: 60_000 });
    assert.equal(await page.getAttribute('#device-speed', 'data-chosen'), faster);

    // KV cache off: why it is slow, and the cost for these numbers (prompt P tokens, G new).
    assert.equal(await page.isHidden('#gen-kv-note'), true);
    await setGenerate(page, { prompt: 'ROMEO:\nWhat light', max: 40, kv: false });
    await page.waitForSelector('#gen-kv-note:not([hidden])');
    await page.waitForFunction(() => document.getElementById('tokens-root').dataset.count > 0);
    await page.waitForTimeout(500); // the prompt's analysis updates the note's prompt length
    const P = Number(await page.getAttribute('#tokens-root', 'data-count'));
    const note = await page.locator('#gen-kv-note').innerText();
    console.log(`kv note: ${note}`);
    assert.equal(Number(await page.getAttribute('#gen-kv-note', 'data-uncached')), 40 * P + (40 * 39) / 2);
    assert.equal(Number(await page.getAttribute('#gen-kv-note', 'data-cached')), P + 39);
    assert.match(note, /each new token re-runs the whole sequence so far/);
    assert.match(note, new RegExp(`\\(${P} prompt tokens, 40 new\\) that is [\\d,]+ token positions through the model instead of ${P + 39}`));
    await page.locator('#view-generate').screenshot({ path: path.join(SHOT_DIR, 'learner-kv-off.png') });
    await page.setChecked('#gen-kv', true);
    assert.equal(await page.isHidden('#gen-kv-note'), true);
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});

test('smaller defects: unknown characters shown as themselves, stale errors cleared, masks unclipped at 1280 px, the BPE size explained', { timeout: 300_000 }, async () => {
  const { page, context, log } = await openPage(env, '');
  try {
    await waitModel(page, 'shakespeare-llama');
    // A character outside the tokenizer's table: the chip shows the snowman itself, flagged, and the stand-in.
    await page.fill('#prompt', 'Snow \u2603 falls');
    await page.waitForSelector('#tokens-root .chip.unknown', { timeout: 30_000 });
    const chip = await page.$eval('#tokens-root .chip.unknown', (li) => ({
      piece: li.querySelector('.chip-piece').textContent, flag: li.querySelector('.chip-flag')?.textContent,
      standIn: li.dataset.standIn, title: li.title,
    }));
    console.log(`unknown chip: ${JSON.stringify(chip)}`);
    assert.match(chip.piece, /\u2603/, 'the character itself, not a stand-in');
    assert.equal(chip.flag, '?');
    assert.notEqual(chip.standIn, undefined);
    assert.match(chip.title, /"\u2603" is not in the tokenizer\u2019s table; the model reads id \d+/);
    await page.locator('#view-tokens').screenshot({ path: path.join(SHOT_DIR, 'learner-unknown-char.png') });

    // A failed load leaves an error line; a later successful generation clears it.
    await page.setInputFiles('#model-file', { name: 'broken.safetensors', mimeType: 'application/octet-stream', buffer: Buffer.from('not a checkpoint at all') });
    await page.waitForSelector('#model-error:not([hidden])', { timeout: 60_000 });
    await setGenerate(page, { prompt: 'ROMEO:\n', temperature: 0, max: 4, kv: true });
    const out = await generateAndWait(page);
    assert.equal(out.state, 'done');
    assert.equal(await page.isHidden('#model-error'), true, 'the load error is gone after a successful generation');
    // A rejected generation leaves an error line; a later successful model load clears it.
    await setGenerate(page, { max: 0 }); // refused: at least 1
    await page.click('#gen-start');
    await page.waitForSelector('#gen-error:not([hidden])');
    await page.click('#model-list button[data-model="shakespeare-gpt"]');
    await waitModel(page, 'shakespeare-gpt');
    assert.equal(await page.isHidden('#gen-error'), true, 'the generation error is gone after a successful load');
    await setGenerate(page, { max: 4 });

    // Masks at 1280 px: no matrix is clipped (each is as wide as its table), the KV-cache one included.
    await setMasks(page, { seqLen: 12, numPad: 3, cachedLen: 20 });
    const clipped = await page.$$eval('#masks-grid .matrix', (figs) => figs.map((f) => {
      const s = f.querySelector('.matrix-scroll');
      return { m: f.dataset.matrix, over: s.scrollWidth - s.clientWidth, right: f.getBoundingClientRect().right };
    }));
    console.log(`masks at 1280: ${JSON.stringify(clipped)}`);
    assert.ok(clipped.some((c) => c.m === 'kv_cache'));
    for (const c of clipped) {
      assert.ok(c.over <= 0, `${c.m} is clipped by ${c.over}px`);
      assert.ok(c.right <= 1280, `${c.m} ends at ${c.right}px`);
    }
    await page.locator('#view-masks').screenshot({ path: path.join(SHOT_DIR, 'learner-masks-1280.png') });

    // The BPE workbench says why the vocabulary is not the size asked.
    for (const [asked, got, why] of [[120, 121, /<UNK> is added afterwards: one more than asked/], [5000, 272, /Training stopped after \d+ of the \d+ merges.*every word of the text is one token/]]) {
      await page.fill('#bpe-vocab', String(asked));
      await page.click('#bpe-train');
      await page.waitForSelector(`#bpe-root[data-state="ready"][data-vocab="${got}"]`, { timeout: 30_000 });
      const note = await page.locator('#bpe-vocab-note').innerText();
      console.log(`bpe ${asked}: ${note}`);
      assert.match(note, new RegExp(`^The vocabulary has ${got} tokens, not ${asked}:`));
      assert.match(note, why);
    }
    await page.locator('#view-bpe').screenshot({ path: path.join(SHOT_DIR, 'learner-bpe-note.png') });
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});
