// Foreign models in the page, driven from its own UI in headless Chromium (WebGPU on SwiftShader):
// the tiny GPT-2 Hugging Face directory's files picked together and dropped together, the tiny Pythia's weights
// dropped on either compute path, llama2.c's model.bin + tokenizer.bin, and a set without config.json. Greedy
// generation must give transformers' own continuation: tests/fixtures/hf_models/*/expected.json (`greedy`, from
// ids) and page.json (from a text prompt, written by train/hf_page_fixtures.py).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setup, openPage, assertClean, REPO, setGenerate, generateAndWait, SHOT_DIR } from './_harness.mjs';

const FIX = path.join(REPO, 'tests/fixtures/hf_models');
const PAGE = JSON.parse(fs.readFileSync(path.join(FIX, 'page.json'), 'utf8'));
const GPT2 = JSON.parse(fs.readFileSync(path.join(FIX, 'gpt2/expected.json'), 'utf8'));
const PYTHIA = JSON.parse(fs.readFileSync(path.join(FIX, 'pythia_parallel/expected.json'), 'utf8'));

/** The files of a fixture as Playwright file payloads (expected.json, which is ours, left out). */
function files(dir, names) {
  const all = names ?? fs.readdirSync(path.join(FIX, dir)).filter((n) => n !== 'expected.json').sort();
  return all.map((name) => ({ name, mimeType: 'application/octet-stream', buffer: fs.readFileSync(path.join(FIX, dir, name)) }));
}

/** A real drop of `payload` (Playwright file payloads) on the drop zone: dragenter, dragover, drop with a DataTransfer. */
async function drop(page, payload) {
  const list = payload.map((f) => ({ name: f.name, data: [...f.buffer] }));
  await page.evaluate((items) => {
    const dt = new DataTransfer();
    for (const f of items) dt.items.add(new File([new Uint8Array(f.data)], f.name));
    const zone = document.getElementById('model-drop');
    zone.dispatchEvent(new DragEvent('dragenter', { dataTransfer: dt, bubbles: true }));
    zone.dispatchEvent(new DragEvent('dragover', { dataTransfer: dt, bubbles: true, cancelable: true }));
    zone.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
  }, list);
}

async function waitFormat(page, format) {
  await page.waitForFunction((f) => {
    const card = document.getElementById('model-card');
    const err = document.getElementById('model-error');
    return (card.dataset.state === 'ready' && card.querySelector('tr[data-field="format"]')?.dataset.value === f) || !err.hidden;
  }, format, { timeout: 180_000 });
  const error = await page.locator('#model-error').innerText();
  assert.equal(await page.isHidden('#model-error'), true, `no load error expected, got: ${error}`);
}

/**
 * A Llama of 683M parameters in f32 (2.7 GB) on disk without its data: config.json and a model.safetensors whose
 * header is real and whose data section is a sparse file (zeros, no disk space). {files: [paths]}.
 */
function bigLlama() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tf-big-llama-'));
  const [d, ff, layers, heads, vocab] = [2048, 5632, 12, 16, 32000];
  const config = { architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: d, intermediate_size: ff,
    num_hidden_layers: layers, num_attention_heads: heads, num_key_value_heads: heads, max_position_embeddings: 64,
    rms_norm_eps: 1e-5, rope_theta: 10000, tie_word_embeddings: true, vocab_size: vocab, hidden_act: 'silu' };
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
  const shapes = [['model.embed_tokens.weight', [vocab, d]], ['model.norm.weight', [d]]];
  for (let l = 0; l < layers; l++) {
    const p = `model.layers.${l}`;
    for (const w of ['q', 'k', 'v', 'o']) shapes.push([`${p}.self_attn.${w}_proj.weight`, [d, d]]);
    shapes.push([`${p}.mlp.gate_proj.weight`, [ff, d]], [`${p}.mlp.up_proj.weight`, [ff, d]], [`${p}.mlp.down_proj.weight`, [d, ff]]);
    shapes.push([`${p}.input_layernorm.weight`, [d]], [`${p}.post_attention_layernorm.weight`, [d]]);
  }
  const header = { __metadata__: { format: 'pt' } };
  let off = 0;
  for (const [name, shape] of shapes) {
    const n = shape.reduce((a, b) => a * b, 1) * 4;
    header[name] = { dtype: 'F32', shape, data_offsets: [off, off + n] };
    off += n;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  const file = path.join(dir, 'model.safetensors');
  fs.writeFileSync(file, Buffer.concat([len, Buffer.from(json)]));
  fs.truncateSync(file, 8 + json.length + off);
  return { files: [path.join(dir, 'config.json'), file], dir };
}

/**
 * A GPT-2 of 12 layers x 12 heads with a 50,257-token vocabulary (d 192, context 128: 15M parameters, 60 MB), random
 * weights written here as a Hugging Face directory, with the tiny GPT-2's tokenizer.json. {files: [paths], dir}.
 */
function wideGpt2() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tf-wide-gpt2-'));
  const [d, layers, heads, vocab, ctx] = [192, 12, 12, 50257, 128];
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ architectures: ['GPT2LMHeadModel'], model_type: 'gpt2',
    n_embd: d, n_layer: layers, n_head: heads, n_positions: ctx, vocab_size: vocab, layer_norm_epsilon: 1e-5,
    activation_function: 'gelu_new', tie_word_embeddings: true, bos_token_id: 0, eos_token_id: 0 }));
  fs.copyFileSync(path.join(FIX, 'gpt2/tokenizer.json'), path.join(dir, 'tokenizer.json'));
  const shapes = [['wte.weight', [vocab, d], 0.02], ['wpe.weight', [ctx, d], 0.01], ['ln_f.weight', [d], 1], ['ln_f.bias', [d], 0]];
  for (let l = 0; l < layers; l++) {
    const p = `h.${l}`;
    shapes.push([`${p}.ln_1.weight`, [d], 1], [`${p}.ln_1.bias`, [d], 0], [`${p}.ln_2.weight`, [d], 1], [`${p}.ln_2.bias`, [d], 0]);
    shapes.push([`${p}.attn.c_attn.weight`, [d, 3 * d], 0.05], [`${p}.attn.c_attn.bias`, [3 * d], 0]);
    shapes.push([`${p}.attn.c_proj.weight`, [d, d], 0.02], [`${p}.attn.c_proj.bias`, [d], 0]);
    shapes.push([`${p}.mlp.c_fc.weight`, [d, 4 * d], 0.02], [`${p}.mlp.c_fc.bias`, [4 * d], 0]);
    shapes.push([`${p}.mlp.c_proj.weight`, [4 * d, d], 0.02], [`${p}.mlp.c_proj.bias`, [d], 0]);
  }
  const header = { __metadata__: { format: 'pt' } };
  const parts = [];
  let off = 0;
  let seed = 12345;
  for (const [name, shape, scale] of shapes) {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      seed = (seed * 1103515245 + 12345) >>> 0;
      data[i] = scale === 1 ? 1 : scale * ((seed / 2 ** 32) * 2 - 1);
    }
    header[name] = { dtype: 'F32', shape, data_offsets: [off, off + 4 * n] };
    parts.push(Buffer.from(data.buffer));
    off += 4 * n;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  fs.writeFileSync(path.join(dir, 'model.safetensors'), Buffer.concat([len, Buffer.from(json), ...parts]));
  return { files: ['config.json', 'model.safetensors', 'tokenizer.json'].map((n) => path.join(dir, n)), dir };
}

const card = (page) => page.$$eval('#model-table tr', (rows) => Object.fromEntries(rows.map((r) => [r.dataset.field, r.dataset.value])));
const promptIds = (page) => page.$$eval('#tokens-root .chip', (cs) => cs.map((c) => Number(c.dataset.id)));

let env;
before(async () => {
  env = await setup({ webgpu: true });
});
after(async () => {
  await env?.close();
});

test('the GPT-2 directory picked together: progress to the end, the card, and transformers\' greedy continuation of a text prompt', { timeout: 400_000 }, async () => {
  const { page, context, log } = await openPage(env, '?nomodel=1');
  try {
    const payload = files('gpt2');
    await page.setInputFiles('#model-file', payload);
    await waitFormat(page, 'huggingface');
    const c = await card(page);
    console.log('card:', JSON.stringify(c));
    assert.equal(Number(c.layers), 2);
    assert.equal(Number(c.heads), 4);
    assert.equal(Number(c.vocab_size), 384);
    assert.equal(c.tokenizer, 'hf_bpe');
    assert.match(await page.locator('#model-table tr[data-field="format"] td').innerText(), /Hugging Face model: GPT2LMHeadModel/);
    assert.match(await page.locator('#model-card .model-title').innerText(), /^GPT2LMHeadModel \(model\.safetensors\) \(your 5 files\)/);
    // The files streamed in through the progress bar, to the end of every one of them.
    const total = payload.reduce((n, f) => n + f.buffer.length, 0);
    assert.equal(Number(await page.getAttribute('#model-progress', 'data-total')), total);
    // Bytes actually read: every byte of the weights, config.json and tokenizer.json (the small JSON files whose
    // fields were already found elsewhere may stay unread).
    const size = (n) => payload.find((f) => f.name === n).buffer.length;
    const loaded = Number(await page.getAttribute('#model-progress', 'data-loaded'));
    assert.ok(loaded >= size('model.safetensors') + size('config.json') + size('tokenizer.json') && loaded <= total,
      `read ${loaded} of ${total} bytes`);

    await setGenerate(page, { prompt: PAGE.prompt, temperature: 0, max: PAGE.new_tokens });
    const out = await generateAndWait(page);
    assert.equal(out.state, 'done', out.error);
    assert.deepEqual(await promptIds(page), PAGE.gpt2.ids, 'the prompt as tokenizer.json encodes it');
    assert.deepEqual(out.ids, PAGE.gpt2.greedy.slice(PAGE.gpt2.ids.length), 'transformers\' greedy continuation');
    // The analysis after the generation: one attention map per layer and head, over the whole sequence.
    await page.waitForSelector('#attention-root[data-state="ready"]', { timeout: 120_000 });
    const att = await page.evaluate(() => window.tinyformer.attention());
    assert.equal(att.kind, 'decoder');
    assert.equal(att.heads, 4);
    assert.equal(att.rows, PAGE.gpt2.greedy.length, 'the analysis covers the prompt and every generated token');
    assert.equal(await page.locator('#attn-thumbs .thumb').count(), 2 * 4, 'a thumbnail per layer and head');
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});

test('the GPT-2 weights dropped without a tokenizer: ids typed by hand give expected.json\'s greedy ids', { timeout: 300_000 }, async () => {
  const { page, context, log } = await openPage(env, '?nomodel=1');
  try {
    await drop(page, files('gpt2', ['config.json', 'model.safetensors', 'generation_config.json']));
    await waitFormat(page, 'huggingface');
    assert.equal((await card(page)).tokenizer, 'none');
    await setGenerate(page, { prompt: GPT2.ids.join(' '), temperature: 0, max: GPT2.greedy.length - GPT2.ids.length });
    const out = await generateAndWait(page);
    assert.equal(out.state, 'done', out.error);
    assert.deepEqual(out.ids, GPT2.greedy.slice(GPT2.ids.length));
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});

test('GPT-NeoX as the Hub has Pythia (parallel residual, partial rotary, f16, a padded vocabulary, BOOL buffers) on WebGPU and the CPU path: transformers\' greedy ids, lens and ablation', { timeout: 400_000 }, async () => {
  for (const backend of ['gpu', 'cpu']) {
    const { page, context, log } = await openPage(env, `?nomodel=1&backend=${backend}`);
    try {
      await drop(page, files('pythia_parallel', ['config.json', 'model.safetensors', 'generation_config.json']));
      await waitFormat(page, 'huggingface');
      await setGenerate(page, { prompt: PYTHIA.ids.join(' '), temperature: 0, max: PYTHIA.greedy.length - PYTHIA.ids.length });
      const out = await generateAndWait(page);
      assert.equal(out.state, 'done', out.error);
      assert.deepEqual(out.ids, PYTHIA.greedy.slice(PYTHIA.ids.length), `${backend}: transformers' greedy ids`);
      // the Inspect view on the same ids: the lens after each attention half (the parallel block's own hook) is
      // transformers' (by its hooks, train/hf_neox_fixtures.py), and zeroing its two heads gives transformers' KL
      await page.fill('#prompt', PYTHIA.ids.join(' '));
      await page.waitForFunction((ids) => document.querySelector('#inspect-root[data-state="ready"] #inspect-surprise')?.dataset.ids === ids,
        PYTHIA.ids.join(','), { timeout: 120_000 });
      assert.equal((await page.$$('button.head-cell')).length, 3 * 2 * 4, `${backend}: three detectors x 2 layers x 4 heads`);
      const mid = await page.$$eval('#inspect-lens-mid td.lens-cell', (cs) => cs.map((c) => ({ ...c.dataset })));
      assert.equal(mid.length, 2 * PYTHIA.ids.length);
      for (const c of mid) assert.equal(Number(c.id), PYTHIA.lens_mid_top1[c.layer][c.pos], `${backend}: lens after attention ${c.layer}/${c.pos}`);
      for (const [l, hd] of PYTHIA.ablate) await page.click(`button.head-cell[data-kind="induction"][data-layer="${l}"][data-head="${hd}"]`);
      await page.selectOption('#inspect-mode', 'zero');
      await page.click('#inspect-ablate');
      await page.waitForSelector('#inspect-ablation[data-kl]', { timeout: 60_000 });
      const d = await page.$eval('#inspect-ablation', (e) => ({ ...e.dataset }));
      const logp = (v) => { const m = Math.max(...v); const z = Math.log(v.reduce((a, x) => a + Math.exp(x - m), 0)); return v.map((x) => x - m - z); };
      const [p, q] = [logp(PYTHIA.logits[PYTHIA.logits.length - 1]), logp(PYTHIA.ablated_last)];
      const kl = p.reduce((a, lp, i) => a + Math.exp(lp) * (lp - q[i]), 0);
      assert.ok(kl > 1e-3 && Math.abs(Number(d.kl) - kl) <= 2e-4 + 1e-2 * kl, `${backend}: KL after the ablation: page ${d.kl}, transformers ${kl}`);
      assertClean(assert, log);
    } finally {
      await context.close();
    }
  }
});

test('llama2.c model.bin + tokenizer.bin on WebGPU: run.c\'s encoding and transformers\' greedy continuation', { timeout: 300_000 }, async () => {
  const { page, context, log } = await openPage(env, '?nomodel=1&backend=gpu');
  try {
    await page.setInputFiles('#model-file', files('llama_tied', ['model.bin', 'tokenizer.bin']));
    await waitFormat(page, 'llama2c');
    const c = await card(page);
    assert.equal(c.tokenizer, 'llama2c');
    assert.equal(c.backend, 'gpu', '"Run on" WebGPU');
    assert.equal(Number(c.kv_heads), 2);
    await setGenerate(page, { prompt: PAGE.prompt, temperature: 0, max: PAGE.new_tokens });
    const out = await generateAndWait(page);
    assert.equal(out.state, 'done', out.error);
    assert.deepEqual(await promptIds(page), PAGE.llama2c.ids, 'the prompt as run.c encodes it (BOS first)');
    assert.deepEqual(out.ids, PAGE.llama2c.greedy.slice(PAGE.llama2c.ids.length));

    // A worker that dies is restarted and reads the same File objects again: the model comes back and runs.
    await page.evaluate(() => { window.tinyformer.crashWorker('panic'); });
    await page.waitForSelector('body[data-worker-restarts="1"]', { timeout: 30_000 });
    assert.match(await page.locator('#worker-notice').innerText(), /model\.bin is being loaded again/);
    const again = await generateAndWait(page);
    assert.equal(again.state, 'done', again.error);
    assert.deepEqual(again.ids, out.ids);
    assert.equal(await page.inputValue('#prompt'), PAGE.prompt);
    assertClean(assert, log, { allow: [/panicked at|deliberate panic/] });
  } finally {
    await context.close();
  }
});

test('a set without config.json, and one over the memory budget: one line of error each; the loaded model and the prompt stay', { timeout: 300_000 }, async () => {
  const { page, context, log } = await openPage(env, '?nomodel=1');
  try {
    await page.setInputFiles('#model-file', files('llama_tied', ['model.bin', 'tokenizer.bin']));
    await waitFormat(page, 'llama2c');
    await page.fill('#prompt', 'my own words');
    await drop(page, files('gpt2', ['model.safetensors', 'tokenizer.json', 'tokenizer_config.json']));
    await page.waitForSelector('#model-error:not([hidden])', { timeout: 60_000 });
    const e = await page.locator('#model-error').innerText();
    console.log(`no config.json: ${e}`);
    assert.match(e, /^Could not load the model from your files: config\.json is missing/, 'the error names the file at fault');
    assert.equal(e.split('\n').length, 1, 'one line');
    assert.match(e, /is still loaded/);
    assert.equal(await page.inputValue('#prompt'), 'my own words', 'what the user typed stays');

    // A config.json with a field of the wrong type (a string where a number goes): the field is named, with what it
    // should be, not serde's "expected usize at line 1 column 78"; and no doubled full stop.
    const config = JSON.parse(fs.readFileSync(path.join(FIX, 'gpt2', 'config.json'), 'utf8'));
    const badConfig = { name: 'config.json', mimeType: 'application/json', buffer: Buffer.from(JSON.stringify({ ...config, n_layer: String(config.n_layer) })) };
    await page.evaluate(() => { document.getElementById('model-error').hidden = true; });
    await drop(page, [badConfig, ...files('gpt2', ['model.safetensors', 'tokenizer.json'])]);
    await page.waitForSelector('#model-error:not([hidden])', { timeout: 60_000 });
    const typed = await page.locator('#model-error').innerText();
    console.log(`wrong type in config.json: ${typed}`);
    assert.match(typed, new RegExp(`^Could not load the model from your files: config\\.json: "n_layer" should be a whole number \\(0 or more\\), not the string "${config.n_layer}"\\. .* is still loaded\\.$`));
    assert.doesNotMatch(typed, /expected usize|line 1 column|\.\.|\?\./);
    assert.equal(await page.inputValue('#prompt'), 'my own words');

    // A model.bin whose header is not llama2.c's: the core's question stands as the end of the sentence ("?", not "?.").
    const [bin, tok] = files('llama_tied', ['model.bin', 'tokenizer.bin']);
    const badBin = Buffer.from(bin.buffer);
    badBin.writeInt32LE(100_000, 8); // n_layers
    await page.evaluate(() => { document.getElementById('model-error').hidden = true; });
    await drop(page, [{ ...bin, buffer: badBin }, tok]);
    await page.waitForSelector('#model-error:not([hidden])', { timeout: 60_000 });
    const header = await page.locator('#model-error').innerText();
    console.log(`bad model.bin: ${header}`);
    assert.match(header, /^Could not load model\.bin: header field n_layers = 100000 is out of range \(1 to \d+\); is this a llama2\.c model\.bin\? model\.bin is still loaded\.$/);

    // A model whose weights alone are over the page's budget (683M parameters, 2.7 GB in f32: a real config.json
    // and a model.safetensors whose data section is a sparse file): refused, naming the biggest buffers, before a
    // single weight is read.
    const big = bigLlama();
    await page.setInputFiles('#model-file', big.files);
    await page.waitForFunction(() => /over the memory budget/.test(document.getElementById('model-error').textContent), null, { timeout: 120_000 });
    const e2 = await page.locator('#model-error').innerText();
    console.log(`over budget: ${e2}`);
    assert.match(e2, /^Could not load model\.safetensors: the model needs [\d.]+ GiB of memory .*over the memory budget of .*biggest buffers: weights 2\.\d GiB/);
    assert.equal(e2.split('\n').length, 1, 'one line');
    assert.ok(Number(await page.getAttribute('#model-progress', 'data-loaded')) < 1 << 20, 'no weight was read');
    fs.rmSync(big.dir, { recursive: true, force: true });
    assert.equal(await page.inputValue('#prompt'), 'my own words');
    assert.equal(await page.getAttribute('#model-card', 'data-state'), 'ready');
    await setGenerate(page, { temperature: 0, max: 3 });
    const out = await generateAndWait(page);
    assert.equal(out.state, 'done', out.error);
    assert.equal(out.count, 3);
    fs.mkdirSync(SHOT_DIR, { recursive: true });
    await page.locator('#view-model').screenshot({ path: path.join(SHOT_DIR, 'hf-error-model.png') });
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});

test('12 layers x 12 heads and a 50k vocabulary: every head has a thumbnail, top-10 and chips fit, no sideways scrolling at 1280 or 390 px', { timeout: 600_000 }, async () => {
  const wide = wideGpt2();
  try {
    for (const [tag, viewport] of [['desktop', { width: 1280, height: 800 }], ['phone', { width: 390, height: 844 }]]) {
      const { page, context, log } = await openPage(env, '?nomodel=1&nogpu=1', { viewport });
      try {
        await page.setInputFiles('#model-file', wide.files);
        await waitFormat(page, 'huggingface');
        const c = await card(page);
        assert.deepEqual([c.layers, c.heads, c.vocab_size], ['12', '12', '50257']);
        await setGenerate(page, { prompt: PAGE.prompt, temperature: 0, max: 12 });
        const out = await generateAndWait(page);
        assert.equal(out.state, 'done', out.error);
        await page.waitForSelector('#attention-root[data-state="ready"]', { timeout: 120_000 });
        await page.waitForSelector('#next-root[data-state="ready"]', { timeout: 120_000 });
        await page.waitForSelector('#inspect-root[data-state="ready"] .head-grids', { timeout: 120_000 });
        assert.equal(await page.locator('#inspect-root .head-cell').count(), 3 * 144, 'three head detectors x 144 heads');
        assert.equal(await page.locator('#attn-thumbs .thumb').count(), 144, 'a thumbnail per layer and head');
        assert.equal(await page.locator('#next-list li.cand').count(), 10);
        const fits = await page.evaluate(() => {
          const inside = (sel) => [...document.querySelectorAll(sel)].every((e) => {
            const card = e.closest('.card').getBoundingClientRect();
            const r = e.getBoundingClientRect();
            return r.left >= card.left - 1 && r.right <= card.right + 1;
          });
          return { scroll: document.documentElement.scrollWidth, thumbs: inside('#attn-thumbs'), cands: inside('#next-list li.cand'),
            chips: inside('#tokens-root .chip') };
        });
        assert.deepEqual(fits, { scroll: viewport.width, thumbs: true, cands: true, chips: true }, `${tag}: ${JSON.stringify(fits)}`);
        fs.mkdirSync(SHOT_DIR, { recursive: true });
        for (const v of ['model', 'attention', 'next', 'tokens', 'inspect']) {
          await page.locator(`#view-${v}`).screenshot({ path: path.join(SHOT_DIR, `hf-wide-${tag}-${v}.png`) });
        }
        assertClean(assert, log);
      } finally {
        await context.close();
      }
    }
  } finally {
    fs.rmSync(wide.dir, { recursive: true, force: true });
  }
});
