// The Inspect view on the decoder_a reference fixture, driven from the UI: the numbers it shows
// (logit lens, head scores, residual norms, surprise, and after clicking a head and "Rerun with ablation", the
// KL and top-1) are the core's, checked against the PyTorch-hook values of tests/fixtures/inspect/decoder_a.json
// (written by train/inspect_fixtures.py) within the tolerances of tests/inspect.rs. Screenshots at 1280 and 390 px.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { setup, openPage, assertClean, REPO, SHOT_DIR, waitModel, setGenerate, generateAndWait } from './_harness.mjs';

const fx = JSON.parse(fs.readFileSync(path.join(REPO, 'tests/fixtures/inspect/decoder_a.json'), 'utf8'));
const ctx = JSON.parse(fs.readFileSync(path.join(REPO, 'tests/fixtures/models/decoder_a.json'), 'utf8')).config.max_seq_len;

let env;
before(async () => {
  env = await setup({ webgpu: true });
});
after(async () => {
  await env?.close();
});

const near = (got, want, atol, rtol, what) => assert.ok(Math.abs(got - want) <= atol + rtol * Math.abs(want), `${what}: page ${got}, PyTorch ${want}`);

for (const width of [1280, 390]) {
  test(`Inspect view at ${width} px: lens, head scores, norms, surprise and ablation are the core's numbers`, async () => {
    const { page, context, log } = await openPage(env, '?model=tests/fixtures/models/decoder_a.safetensors', { viewport: { width, height: 900 } });
    try {
      await waitModel(page, 'decoder_a.safetensors');
      await page.fill('#prompt', fx.ids.join(' '));
      await page.waitForSelector(`#inspect-root[data-state="ready"] #inspect-surprise span:nth-child(${fx.ids.length})`, { timeout: 60_000 });

      const scores = await page.$$eval('button.head-cell', (bs) => bs.map((b) => ({ ...b.dataset })));
      assert.equal(scores.length, 3 * 2 * 2, 'three detectors x 2 layers x 2 heads');
      for (const s of scores) near(Number(s.score), fx.head_scores[s.kind][s.layer][s.head], 1e-4, 0, `${s.kind} ${s.layer}.${s.head}`);

      const lens = await page.$$eval('td.lens-cell', (cs) => cs.map((c) => ({ ...c.dataset })).filter((d) => d.layer !== undefined));
      assert.equal(lens.length, 2 * 2 * fx.ids.length, 'after-block and after-attention grids');
      const post = await page.$$eval('#inspect-lens td.lens-cell', (cs) => cs.map((c) => ({ ...c.dataset })));
      for (const c of post) {
        const row = fx.lens_probs[c.layer][c.pos];
        near(Number(c.p), row[Number(c.id)], 1e-4, 0, `lens ${c.layer}/${c.pos}`);
        near(Number(c.p), Math.max(...row), 1e-4, 0, `lens ${c.layer}/${c.pos} is the top-1`);
      }

      const ent = await page.$$eval('td.entropy-cell', (cs) => cs.map((c) => ({ ...c.dataset })));
      assert.equal(ent.length, 2 * 2);
      for (const e of ent) {
        const row = fx.attention_entropy[e.layer][e.head];
        near(Number(e.mean), row.reduce((a, b) => a + b, 0) / row.length, 1e-4, 0, `entropy ${e.layer}.${e.head}`);
      }
      // per-position entropy: head 0.0 by default, then click head 1.1 and read its strip and tooltips
      for (const [l, hd] of [[0, 0], [1, 1]]) {
        if (l || hd) await page.click(`td.entropy-cell[data-layer="${l}"][data-head="${hd}"]`);
        assert.equal(await page.getAttribute(`td.entropy-cell[data-layer="${l}"][data-head="${hd}"]`, 'aria-selected'), 'true');
        const strip = await page.$$eval('#inspect-entropy-strip td.entropy-pos', (cs) => cs.map((c) => ({ ...c.dataset, title: c.title })));
        assert.equal(strip.length, fx.ids.length, 'one cell per query position');
        for (const c of strip) {
          assert.equal(`${c.layer}.${c.head}`, `${l}.${hd}`);
          near(Number(c.entropy), fx.attention_entropy[l][hd][c.pos], 1e-4, 0, `entropy ${l}.${hd} at ${c.pos}`);
          assert.match(c.title, new RegExp(`^L${l} H${hd}, position ${c.pos} .*: ${Number(c.entropy).toFixed(3)} nats$`));
        }
      }
      assert.ok(fx.attention_entropy[1][1].some((e, p) => Math.abs(e - fx.attention_entropy[0][0][p]) > 1e-3), 'the two heads differ, so the click changed the strip');

      const norms = await page.$$eval('td.norm-cell', (cs) => cs.map((c) => ({ ...c.dataset })));
      assert.equal(norms.length, 3 * fx.ids.length);
      for (const n of norms) near(Number(n.norm), fx.residual_norms[n.layer][n.pos], 1e-3, 1e-4, `norm ${n.layer}/${n.pos}`);

      const surprise = await page.$$eval('span.surprise-tok', (ss) => ss.map((s) => Number(s.dataset.surprise)));
      surprise.forEach((s, i) => near(s, fx.surprise[i], 1e-3, 1e-3, `surprise ${i}`));
      const tip = await page.getAttribute('span.surprise-tok[data-pos="3"]', 'title');
      assert.match(tip, /nats; the model expected: /, 'hover shows the top alternatives');

      // ablate head 1.0 (zero) from the grid and rerun: KL and top-1 as PyTorch's zero ablation of 1.0
      const ab = fx.ablations.find((a) => a.kind === 'zero');
      assert.deepEqual(ab.heads, [[1, 0]]);
      await page.click('button.head-cell[data-kind="induction"][data-layer="1"][data-head="0"]');
      assert.equal(await page.getAttribute('button.head-cell[data-kind="previous_token"][data-layer="1"][data-head="0"]', 'aria-pressed'), 'true');
      await page.selectOption('#inspect-mode', 'zero');
      await page.click('#inspect-ablate');
      await page.waitForSelector('#inspect-ablation[data-kl]', { timeout: 60_000 });
      const d = await page.$eval('#inspect-ablation', (e) => ({ ...e.dataset }));
      near(Number(d.kl), ab.kl_last, 2e-4, 1e-2, 'KL after the ablation');
      const argmax = (v) => v.indexOf(Math.max(...v));
      assert.equal(Number(d.top1After), argmax(ab.logits_last), 'top-1 after the ablation');
      assert.equal(Number(d.top1Before), argmax(fx.logits[fx.logits.length - 1]), 'top-1 before');

      // regenerate with the ablation on
      await page.click('#inspect-generate');
      await page.waitForSelector('#inspect-generated[data-ids]', { timeout: 60_000 });
      const gen = (await page.getAttribute('#inspect-generated', 'data-ids')).split(',').map(Number);
      assert.equal(gen.length, Math.min(24, ctx - fx.ids.length), '24 tokens or up to the context');
      assert.equal(gen[0], argmax(ab.logits_last), 'the first generated token is the ablated top-1');

      // the induction test from its button
      await page.click('#inspect-induction');
      await page.waitForSelector('#inspect-induction-result[data-second]', { timeout: 60_000 });

      fs.mkdirSync(SHOT_DIR, { recursive: true });
      await page.locator('#view-inspect').screenshot({ path: path.join(SHOT_DIR, `inspect-${width}.png`) });
      assertClean(assert, log);
    } finally {
      await context.close();
    }
  });
}

test('Inspect view (MoE fixture): removing two experts from routing gives PyTorch\'s KL and top-1', async () => {
  const moe = JSON.parse(fs.readFileSync(path.join(REPO, 'tests/fixtures/inspect/moe_a.json'), 'utf8'));
  const ab = moe.ablations.find((a) => a.experts.length);
  assert.deepEqual(ab.heads, []);
  const { page, context, log } = await openPage(env, '?model=tests/fixtures/models/moe_a.safetensors');
  try {
    await waitModel(page, 'moe_a.safetensors');
    await page.fill('#prompt', moe.ids.join(' '));
    await page.waitForSelector(`#inspect-root[data-state="ready"] #inspect-surprise span:nth-child(${moe.ids.length})`, { timeout: 60_000 });
    await page.fill('#inspect-experts', ab.experts.map((x) => x.join('.')).join(', '));
    await page.click('#inspect-ablate');
    await page.waitForSelector('#inspect-ablation[data-kl]', { timeout: 60_000 });
    const d = await page.$eval('#inspect-ablation', (e) => ({ ...e.dataset, text: e.textContent }));
    near(Number(d.kl), ab.kl_last, 2e-4, 1e-2, 'KL after removing the experts');
    assert.equal(Number(d.top1After), ab.logits_last.indexOf(Math.max(...ab.logits_last)));
    assert.match(d.text, /experts 0\.1, 1\.2 removed/);
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});

test('Inspect view: blocking attention mask cells from the grid gives PyTorch\'s KL and top-1 (decoder_a)', async () => {
  const ab = fx.ablations.find((a) => a.mask_cells);
  assert.deepEqual(ab.heads, []);
  const { page, context, log } = await openPage(env, '?model=tests/fixtures/models/decoder_a.safetensors', { viewport: { width: 1280, height: 900 } });
  try {
    await waitModel(page, 'decoder_a.safetensors');
    await page.fill('#prompt', fx.ids.join(' '));
    await page.waitForSelector(`#inspect-root[data-state="ready"] #inspect-surprise span:nth-child(${fx.ids.length})`, { timeout: 60_000 });
    assert.equal(await page.isDisabled('#inspect-ablate'), true, 'nothing chosen yet');
    await page.click('#inspect-cells-box summary');
    const t = fx.ids.length;
    assert.equal(await page.locator('button.mask-cell').count(), (t * (t + 1)) / 2, 'one button per causal cell');
    for (const [q, k] of ab.mask_cells) await page.click(`button.mask-cell[data-q="${q}"][data-k="${k}"]`);
    // a second click un-blocks: toggle one extra cell on and off
    await page.click('button.mask-cell[data-q="3"][data-k="3"]');
    await page.click('button.mask-cell[data-q="3"][data-k="3"]');
    const pressed = await page.$$eval('button.mask-cell[aria-pressed="true"]', (bs) => bs.map((b) => [Number(b.dataset.q), Number(b.dataset.k)]));
    assert.deepEqual(pressed.sort(), [...ab.mask_cells].sort());
    await page.click('#inspect-ablate');
    await page.waitForSelector('#inspect-ablation[data-kl]', { timeout: 60_000 });
    const d = await page.$eval('#inspect-ablation', (e) => ({ ...e.dataset, text: e.textContent }));
    near(Number(d.kl), ab.kl_last, 2e-4, 1e-2, 'KL after blocking the cells');
    const argmax = (v) => v.indexOf(Math.max(...v));
    assert.equal(Number(d.top1After), argmax(ab.logits_last), 'top-1 after');
    assert.equal(Number(d.top1Before), argmax(fx.logits[fx.logits.length - 1]), 'top-1 before');
    assert.match(d.text, new RegExp(`attention cells ${ab.mask_cells.map(([q, k]) => `${q}\u2192${k}`).join(', ')} blocked`));
    // the grid keeps the blocked cells after the rerun
    assert.equal(await page.locator('button.mask-cell[aria-pressed="true"]').count(), ab.mask_cells.length);
    // regenerate with only the cells blocked (no head chosen): the first token is the blocked run's top-1
    assert.equal(await page.isDisabled('#inspect-generate'), false, 'cells alone allow generating');
    await page.click('#inspect-generate');
    await page.waitForSelector('#inspect-generated[data-ids]', { timeout: 60_000 });
    const gen = (await page.getAttribute('#inspect-generated', 'data-ids')).split(',').map(Number);
    assert.equal(gen[0], argmax(ab.logits_last), 'the first generated token is the top-1 with the cells blocked');
    assert.match(await page.locator('#inspect-generated').innerText(), /cell \d+→\d+/);
    fs.mkdirSync(SHOT_DIR, { recursive: true });
    await page.locator('#inspect-cells-box').screenshot({ path: path.join(SHOT_DIR, 'inspect-cells-1280.png') });
    await page.setViewportSize({ width: 390, height: 900 });
    await page.locator('#inspect-cells-box').screenshot({ path: path.join(SHOT_DIR, 'inspect-cells-390.png') });
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});

test('Inspect view (encoder-decoder): blocking cross-attention cells from the grid reruns the core with exactly those cells', async () => {
  // The core's cross-cell ablation is checked against PyTorch in tests/inspect.rs (encdec_a/encdec_b fixtures);
  // here the page: the grid has one button per (decoder query, source key), the clicked cells are what the
  // core gets, and the KL / top-1 shown are the core's for them.
  const src = [5, 9, 3, 7, 2];
  const { page, context, log } = await openPage(env, '?model=tests/fixtures/models/encdec_a.safetensors', { viewport: { width: 1280, height: 900 } });
  try {
    await waitModel(page, 'encdec_a.safetensors');
    await setGenerate(page, { prompt: src.join(' '), temperature: 0, max: 4 });
    const out = await generateAndWait(page);
    assert.ok(['done', 'stopped'].includes(out.state), JSON.stringify(out));
    // The inspect view reruns on the analysis of the generation: [BOS] + the generated tokens.
    await page.waitForFunction((n) => document.querySelector('#inspect-root[data-state="ready"] #inspect-surprise')?.dataset.ids.split(',').length === n,
      1 + out.count, { timeout: 60_000 });
    const tgt = (await page.getAttribute('#inspect-surprise', 'data-ids')).split(',').map(Number);
    assert.equal(tgt[0], 1, 'the decoder input starts with BOS');
    assert.equal(tgt.length, 1 + out.count);
    await page.click('#inspect-xcells-box summary');
    assert.equal(await page.locator('button.cross-cell').count(), tgt.length * src.length, 'one button per (query, source key)');
    assert.equal(await page.locator('button.mask-cell').count(), (tgt.length * (tgt.length + 1)) / 2, 'the self-attention grid is still there');
    const q = tgt.length - 1;
    const cells = [[q, 0], [q, 1], [q, 2], [0, 4]];
    for (const [a, b] of cells) await page.click(`button.cross-cell[data-q="${a}"][data-k="${b}"]`);
    await page.click('button.cross-cell[data-q="1"][data-k="1"]'); // on and off again
    await page.click('button.cross-cell[data-q="1"][data-k="1"]');
    const pressed = await page.$$eval('button.cross-cell[aria-pressed="true"]', (bs) => bs.map((b) => [Number(b.dataset.q), Number(b.dataset.k)]));
    assert.deepEqual(pressed.sort(), [...cells].sort());
    assert.match(await page.locator('#inspect-xcells-box summary').innerText(), /\(4 blocked\)/);
    await page.click('#inspect-ablate');
    await page.waitForSelector('#inspect-ablation[data-kl]', { timeout: 60_000 });
    const d = await page.$eval('#inspect-ablation', (e) => ({ ...e.dataset, text: e.textContent }));
    assert.match(d.text, new RegExp(`cross-attention cells ${cells.map(([a, b]) => `${a}\u2192${b}`).join(', ')} blocked`));
    // The same request straight to the core (the worker), with only these cells: the page showed its numbers.
    const want = await page.evaluate(({ src, tgt, cells }) => window.tinyformer.call('inspect', { ids: src, tgt, opts: { cross_cells: cells, mode: 'zero' } }), { src, tgt, cells });
    const ab = want.report.ablation;
    assert.deepEqual(ab.cross_cells, cells);
    assert.ok(ab.kl_last > 1e-6, `blocking three of the last row's five source keys moves its distribution (KL ${ab.kl_last})`);
    assert.equal(Number(d.kl), ab.kl_last);
    assert.equal(Number(d.top1After), ab.top1_after);
    assert.equal(await page.locator('button.cross-cell[aria-pressed="true"]').count(), cells.length, 'the grid keeps the blocked cells after the rerun');
    await page.click('#inspect-generate');
    await page.waitForSelector('#inspect-generated[data-ids]', { timeout: 60_000 });
    assert.match(await page.locator('#inspect-generated').innerText(), /cross cell \d+→\d+/);
    fs.mkdirSync(SHOT_DIR, { recursive: true });
    await page.locator('#inspect-xcells-box').screenshot({ path: path.join(SHOT_DIR, 'inspect-xcells-1280.png') });
    await page.setViewportSize({ width: 390, height: 900 });
    await page.locator('#inspect-xcells-box').screenshot({ path: path.join(SHOT_DIR, 'inspect-xcells-390.png') });
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});
