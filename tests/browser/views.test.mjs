// The views on the small reference fixtures (tests/fixtures/models, no tokenizer: ids typed by hand), whose
// PyTorch numbers are known: the attention export equals PyTorch's weights, rows sum to 1, blocked cells are 0;
// the experts view shows PyTorch's routing; the encoder-decoder has its three tabs; a panic during generation
// restarts the worker with the prompt kept and the model loaded again; the BPE workbench; the masks toggle.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  setup, openPage, assertClean, REPO, waitModel, setGenerate, generateAndWait, exportAttentionJson, readMatrix, setMasks,
} from './_harness.mjs';

const fixture = (name) => JSON.parse(fs.readFileSync(path.join(REPO, 'tests/fixtures/models', `${name}.json`), 'utf8'));
const modelQuery = (name) => `?model=tests/fixtures/models/${name}.safetensors`;

let env;
before(async () => {
  env = await setup({ webgpu: true });
});
after(async () => {
  await env?.close();
});

/** Types ids into the prompt and waits for the analysis of exactly that many tokens. */
async function analyzeIds(page, ids) {
  await page.fill('#prompt', ids.join(' '));
  await page.waitForSelector(`#tokens-root[data-state="ready"][data-count="${ids.length}"]`, { timeout: 30_000 });
  await page.waitForFunction((n) => {
    const a = window.tinyformer.attention();
    return a && a.cols === n && document.getElementById('attention-root').dataset.state === 'ready';
  }, ids.length, { timeout: 30_000 });
}

test('attention export (GQA llama fixture): PyTorch\'s weights, rows sum to 1, blocked cells 0, KV-head mapping', async () => {
  const fx = fixture('llama_gqa');
  const { page, context, log } = await openPage(env, modelQuery('llama_gqa'));
  try {
    await waitModel(page, 'llama_gqa.safetensors');
    assert.equal(await page.getAttribute('#model-table tr[data-field="kv_heads"]', 'data-value'), '2');
    await analyzeIds(page, fx.inputs.ids);
    // Tokens view: one chip per typed id.
    const chipIds = await page.$$eval('#tokens-root .chip', (cs) => cs.map((c) => Number(c.dataset.id)));
    assert.deepEqual(chipIds, fx.inputs.ids);

    for (const [layer, head] of [[0, 0], [1, 3]]) {
      await page.click(`.thumb[data-layer="${layer}"][data-head="${head}"]`);
      await page.waitForSelector(`#attention-root[data-layer="${layer}"][data-head="${head}"]`);
      const { name, json } = await exportAttentionJson(page);
      assert.equal(name, `attention-llama_gqa.safetensors-decoder-L${layer}-H${head}.json`);
      assert.equal(json.kind, 'decoder');
      assert.equal(json.layer, layer);
      assert.equal(json.head, head);
      assert.equal(json.kv_head, Math.floor(head / 2), '4 query heads over 2 KV heads: pairs share one');
      const T = fx.inputs.ids.length;
      assert.equal(json.rows, T);
      assert.equal(json.cols, T);
      assert.equal(json.tokens.queries.length, T);
      assert.deepEqual(json.tokens.keys, fx.inputs.ids.map((i) => `#${i}`));
      const want = fx.attention.find((a) => a.kind === 'decoder' && a.layer === layer).weights[head];
      let maxDiff = 0;
      for (let i = 0; i < T; i++) {
        const sum = json.weights[i].reduce((a, b) => a + b, 0);
        assert.ok(Math.abs(sum - 1) <= 1e-4, `row ${i} sums to ${sum}`);
        for (let j = 0; j < T; j++) {
          assert.equal(json.mask[i][j], j <= i ? 1 : 0, `causal mask at ${i},${j}`);
          if (json.mask[i][j] === 0) assert.equal(json.weights[i][j], 0, `blocked cell ${i},${j} is 0`);
          maxDiff = Math.max(maxDiff, Math.abs(json.weights[i][j] - want[i][j]));
        }
      }
      console.log(`llama_gqa L${layer} H${head}: max |page - PyTorch| = ${maxDiff.toExponential(2)}`);
      assert.ok(maxDiff <= 1e-4, `attention equals PyTorch's within 1e-4 (max diff ${maxDiff})`);
    }
    // The GQA mapping is listed.
    const gqa = await page.$$eval('#attn-gqa-map li', (lis) => lis.map((l) => l.textContent));
    assert.deepEqual(gqa, ['KV head 0 ← query heads 0, 1', 'KV head 1 ← query heads 2, 3']);
    // The PNG export gives a PNG.
    const [png] = await Promise.all([page.waitForEvent('download'), page.click('#attn-export-png')]);
    const bytes = fs.readFileSync(await png.path());
    assert.deepEqual([...bytes.subarray(0, 4)], [0x89, 0x50, 0x4e, 0x47], 'a PNG file');
    // Hover tooltip on a blocked cell and on an allowed one.
    const box = await page.locator('#attn-heatmap').boundingBox();
    const layout = await page.evaluate(() => {
      const c = document.getElementById('attn-heatmap');
      return { w: c.width / Math.min(2, devicePixelRatio || 1) };
    });
    assert.ok(box.width > 100 && layout.w > 100);
    await page.focus('#attn-heatmap');
    await page.keyboard.press('ArrowRight'); // cursor to (0, 1): above the diagonal, blocked
    assert.match(await page.locator('#attn-tooltip').innerText(), /query 0 .* key 1 .*blocked/);
    await page.keyboard.press('ArrowDown'); // (1, 1): allowed
    assert.match(await page.locator('#attn-tooltip').innerText(), /query 1 .* key 1 .*: 0\.\d{4}$/);
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});

test('experts view (MoE fixture) shows PyTorch\'s routing and the load per expert', async () => {
  const fx = fixture('moe_a');
  const { page, context, log } = await openPage(env, modelQuery('moe_a'));
  try {
    await waitModel(page, 'moe_a.safetensors');
    await analyzeIds(page, fx.inputs.ids);
    await page.waitForSelector('#experts-root[data-state="ready"]');
    for (const L of [0, 1]) {
      await page.click(`#experts-root .seg button[data-layer="${L}"]`);
      await page.waitForSelector(`#experts-root[data-layer="${L}"]`);
      const shown = await page.$$eval('#experts-table tbody tr', (trs) => trs.map((tr) => ({
        probs: [...tr.querySelectorAll('td.ep')].map((td) => Number(td.dataset.p)),
        chosen: [...tr.querySelectorAll('td.ep.chosen')].sort((a, b) => a.dataset.rank - b.dataset.rank).map((td) => Number(td.dataset.expert)),
      })));
      const want = fx.moe[L];
      assert.equal(shown.length, fx.inputs.ids.length);
      for (let t = 0; t < shown.length; t++) {
        assert.deepEqual(shown[t].chosen, want.experts[t], `layer ${L} token ${t}: chosen experts`);
        shown[t].probs.forEach((p, e) => assert.ok(Math.abs(p - want.router_probs[t][e]) < 1e-4, `router prob ${L}/${t}/${e}`));
      }
      const load = await page.$$eval('#experts-load li', (lis) => lis.map((li) => Number(li.dataset.count)));
      const wantLoad = [0, 0, 0, 0];
      want.experts.forEach((es, t) => es.forEach((e, r) => { if (want.kept[t][r]) wantLoad[e]++; }));
      assert.deepEqual(load, wantLoad, `layer ${L}: kept assignments per expert`);
    }
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});

test('encoder-decoder fixture: three attention tabs; PAD source keys are blocked and 0 in the export', async () => {
  const { page, context, log } = await openPage(env, modelQuery('encdec_a'));
  try {
    await waitModel(page, 'encdec_a.safetensors');
    await page.fill('#prompt', '5 9 3 7 0 0');
    await page.waitForSelector('#tokens-root[data-count="6"]');
    await page.waitForFunction(() => window.tinyformer.attention()?.cols > 0, null, { timeout: 30_000 });
    const tabs = await page.$$eval('#attention-root [role=tab]', (ts) => ts.map((t) => t.dataset.kind));
    assert.deepEqual(tabs, ['encoder', 'decoder', 'cross']);
    for (const kind of ['encoder', 'cross']) {
      await page.click(`#attn-tab-${kind}`);
      await page.waitForSelector(`#attention-root[data-kind="${kind}"]`);
      const { json } = await exportAttentionJson(page);
      assert.equal(json.kind, kind);
      assert.equal(json.cols, 6);
      for (let i = 0; i < json.rows; i++) {
        assert.deepEqual(json.mask[i], [1, 1, 1, 1, 0, 0], `${kind} row ${i}: PAD keys blocked`);
        assert.equal(json.weights[i][4], 0);
        assert.equal(json.weights[i][5], 0);
        assert.ok(Math.abs(json.weights[i].reduce((a, b) => a + b, 0) - 1) <= 1e-4);
      }
    }
    // The current input's masks: encoder 6x6 with PAD columns 0, cross 1x6.
    const enc = await readMatrix(page, 'input-encoder');
    assert.deepEqual(enc.cells, Array.from({ length: 6 }, () => [1, 1, 1, 1, 0, 0]));
    const cross = await readMatrix(page, 'input-cross');
    assert.deepEqual(cross.cells, [[1, 1, 1, 1, 0, 0]]);
    // Greedy generation runs (random weights: only the mechanics are checked) and the scrubber appears.
    await setGenerate(page, { temperature: 0, max: 6 });
    const out = await generateAndWait(page);
    assert.equal(out.state, 'done');
    assert.ok(out.count >= 1 && out.count <= 6, `generated ${out.count}`);
    await page.click('#attn-tab-decoder');
    await page.waitForSelector('#attn-step');
    await page.click('#gen-output .tok[data-step="0"]');
    await page.waitForSelector('#attention-root[data-step="0"]');
    assert.match(await page.locator('#attn-step-label').innerText(), /step 0: .* query row 0/);
    assert.equal(await page.getAttribute('#next-root li.cand.chosen', 'data-id'), String(out.ids[0]));
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});

test('a panic during generation restarts the worker, keeps the prompt and loads the model again', async () => {
  const { page, context, log } = await openPage(env, modelQuery('decoder_b'));
  try {
    await waitModel(page, 'decoder_b.safetensors');
    // A generation that outlasts the crash: decoder_b's 35 free positions can all stream before the crash
    // lands on the fast CPU path, so the window slides on for up to 2000 tokens.
    await setGenerate(page, { prompt: '3 1 4 1 5', temperature: 0, max: 2000 });
    await page.setChecked('#gen-slide', true);
    await page.click('#gen-start');
    await page.waitForFunction(() => Number(document.getElementById('gen-output').dataset.count) >= 2, null, { timeout: 60_000 });
    await page.evaluate(() => { window.tinyformer.crashWorker('panic'); });
    await page.waitForSelector('body[data-worker-restarts="1"]', { timeout: 30_000 });
    await page.waitForSelector('#gen-output[data-state="error"]');
    assert.match(await page.locator('#gen-error').innerText(), /worker stopped during generation.*prompt is kept/);
    assert.match(await page.locator('#worker-notice').innerText(), /restarted.*decoder_b\.safetensors is being loaded again/);
    // A real Rust panic (debug_panic in the core): its message reaches the user.
    assert.match(await page.locator('#worker-notice').innerText() + await page.locator('#gen-error').innerText(), /deliberate panic for testing/);
    assert.equal(await page.inputValue('#prompt'), '3 1 4 1 5', 'the prompt is kept');
    // The model is loaded again in the fresh worker, and greedy generation gives the fixture's continuation.
    await page.waitForFunction(() => !document.getElementById('gen-start').disabled, null, { timeout: 60_000 });
    const { greedy } = fixture('decoder_b');
    await setGenerate(page, { prompt: greedy.prompt_ids.join(' '), max: 8 });
    const out = await generateAndWait(page);
    assert.equal(out.state, 'done', out.error);
    assert.equal(out.count, 8);
    assert.deepEqual(out.ids, greedy.ids.slice(greedy.prompt_ids.length, greedy.prompt_ids.length + 8), 'PyTorch\'s greedy ids');
    assertClean(assert, log, { allow: [/panicked|unreachable|deliberate panic/] });
  } finally {
    await context.close();
  }
});

test('masks: the seed-convention toggle flips the digits shown, not the data; BPE workbench steps through merges', async () => {
  const { page, context, log } = await openPage(env, '?nomodel=1');
  try {
    await setMasks(page, { seqLen: 5, numPad: 2, cachedLen: 0 });
    await page.check('#masks-seed-convention');
    const shown = await page.$$eval('[data-matrix="combined"] td.cell', (tds) => tds.map((td) => [Number(td.dataset.value), Number(td.textContent)]));
    assert.equal(shown.length, 25);
    assert.ok(shown.every(([v, s]) => s === 1 - v), 'every digit is flipped (1 = blocked)');
    assert.match(await page.locator('#masks-legend').innerText(), /1\s*= blocked/);
    await page.uncheck('#masks-seed-convention');
    assert.match(await page.locator('#masks-legend').innerText(), /1\s*= may attend/);

    // BPE workbench: train on a tiny text, step through the merges.
    await page.fill('#bpe-text', 'low low low low lower lower newest newest newest widest widest');
    await page.fill('#bpe-vocab', '30');
    await page.fill('#bpe-sentence', 'lowest');
    await page.click('#bpe-train');
    await page.waitForSelector('#bpe-root[data-state="ready"]', { timeout: 30_000 });
    const merges = Number(await page.getAttribute('#bpe-root', 'data-merges'));
    assert.ok(merges >= 3, `learned ${merges} merges`);
    const pieces = async () => page.$$eval('#bpe-pieces li', (lis) => lis.map((l) => l.textContent));
    await page.fill('#bpe-step', '0');
    await page.dispatchEvent('#bpe-step', 'input');
    const p0 = await pieces();
    assert.equal(p0.join('').replace(/<\/w>/g, ''), 'lowest', `pieces join back to the word: ${p0}`);
    await page.click('#bpe-next');
    await page.click('#bpe-next');
    await page.click('#bpe-next');
    assert.equal(await page.getAttribute('#bpe-root', 'data-step'), '3');
    const p3 = await pieces();
    assert.ok(p3.length < p0.length, `three merges shorten "lowest": ${p0.length} -> ${p3.length} pieces`);
    const first3 = await page.$$eval('#bpe-merges li', (lis) => lis.slice(0, 3).map((l) => l.textContent));
    console.log(`bpe: ${merges} merges; first: ${first3.join(' | ')}; "lowest": ${p0.join(' ')} -> ${p3.join(' ')}`);
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});

test('"Run on" WebGPU then the CPU path loads the same model on each: the same greedy tokens as PyTorch', async () => {
  const { greedy } = fixture('decoder_b');
  const want = greedy.ids.slice(greedy.prompt_ids.length, greedy.prompt_ids.length + 6);
  const { page, context, log } = await openPage(env, `${modelQuery('decoder_b')}&backend=gpu`);
  try {
    await waitModel(page, 'decoder_b.safetensors');
    await setGenerate(page, { prompt: greedy.prompt_ids.join(' '), temperature: 0, max: 6 });
    assert.equal(await page.getAttribute('#model-card', 'data-backend'), 'gpu');
    const onGpu = await generateAndWait(page);
    assert.equal(await page.inputValue('#model-backend'), 'gpu');
    await page.selectOption('#model-backend', 'cpu');
    await page.waitForSelector('#model-card[data-backend="cpu"]', { timeout: 30_000 });
    assert.equal(await page.inputValue('#prompt'), greedy.prompt_ids.join(' '), 'the prompt is kept');
    const onCpu = await generateAndWait(page);
    assert.deepEqual(onGpu.ids, want, 'WebGPU');
    assert.deepEqual(onCpu.ids, want, 'CPU');
    assert.match(await page.locator('#gen-stats').innerText(), /· CPU$/);
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});
