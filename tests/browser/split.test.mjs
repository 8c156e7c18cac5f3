// Tables split across storage bindings in the page (ARCHITECTURE.md, "Tables split across bindings"): with
// ?maxbinding=70000 the worker asks the core for a 70,000-byte maxStorageBufferBindingSize (www/worker.js ->
// gpu_init), so the wide fixtures' embeddings and heads (1000 x 64: 256,000 bytes f32, 128,000 f16;
// train/hf_split_fixtures.py) are bound in ranges of rows, and so are their logits (a context of 24 x 1000 f32:
// 96,000 bytes) and the logit lens's block, while every other buffer fits. Loaded through the page's own UI on
// WebGPU (SwiftShader), greedy generation must give the same ids and text as the page without the lowered limit,
// and transformers' own (expected.json); the Inspect view on a prompt of the whole context the same lens.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { setup, openPage, assertClean, REPO, setGenerate, generateAndWait } from './_harness.mjs';

const FIX = path.join(REPO, 'tests/fixtures/hf_models');
const LIMIT = 70000;
// the whole context of the wide fixtures, typed as ids: its logits and lens are over the lowered limit
const LONG = Array.from({ length: 24 }, (_, i) => (i * 37 + 5) % 1000).join(' ');
const PROMPT = 'ROMEO:\nBut, soft! what light';

function files(dir, names) {
  const all = names ?? fs.readdirSync(path.join(FIX, dir)).filter((n) => n !== 'expected.json').sort();
  return all.map((name) => ({ name, mimeType: 'application/octet-stream', buffer: fs.readFileSync(path.join(FIX, dir, name)) }));
}
const expected = (dir) => JSON.parse(fs.readFileSync(path.join(FIX, dir, 'expected.json'), 'utf8'));

async function waitLoaded(page) {
  await page.waitForFunction(() => {
    const card = document.getElementById('model-card');
    return (card.dataset.state === 'ready' && card.querySelector('tr[data-field="format"]')?.dataset.value === 'huggingface')
      || !document.getElementById('model-error').hidden;
  }, null, { timeout: 180_000 });
  const error = await page.locator('#model-error').innerText();
  assert.equal(await page.isHidden('#model-error'), true, `no load error expected, got: ${error}`);
}

/** Loads `dir` (all its files, or `names`) through the file picker on WebGPU, then generates greedily from `prompt`;
 * with `inspect`, then types those ids and reads the Inspect view's logit lens (after each block and each attention half). */
async function run(query, dir, prompt, max, names, inspect) {
  const { page, context, log } = await openPage(env, `?nomodel=1&backend=gpu${query}`);
  try {
    await page.waitForSelector('#device-limits tr[data-limit="max_storage_buffer_binding_size"]', { timeout: 120_000 });
    const limit = Number(await page.getAttribute('#device-limits tr[data-limit="max_storage_buffer_binding_size"]', 'data-value'));
    await page.setInputFiles('#model-file', files(dir, names));
    await waitLoaded(page);
    await setGenerate(page, { prompt, temperature: 0, max });
    const out = await generateAndWait(page);
    assert.equal(out.state, 'done', out.error);
    let lens;
    if (inspect) {
      await page.fill('#prompt', inspect);
      await page.waitForFunction((ids) => document.querySelector('#inspect-root[data-state="ready"] #inspect-surprise')?.dataset.ids === ids,
        inspect.split(' ').join(','), { timeout: 180_000 });
      lens = await page.$$eval('#inspect-lens td.lens-cell, #inspect-lens-mid td.lens-cell', (cs) => cs.map((c) => `${c.dataset.layer}/${c.dataset.pos}:${c.dataset.id}`));
    }
    assertClean(assert, log);
    return { limit, ids: out.ids, text: out.text, lens };
  } finally {
    await context.close();
  }
}

let env;
before(async () => {
  env = await setup({ webgpu: true });
});
after(async () => {
  await env?.close();
});

test('GPT-2 with its tied 1000 x 64 f32 embedding in four bindings: the same text, ids and logit lens as with the adapter\'s own limit', { timeout: 600_000 }, async () => {
  const names = ['config.json', 'model.safetensors', 'generation_config.json'];
  const split = await run(`&maxbinding=${LIMIT}`, 'gpt2_wide', PROMPT, 8);
  const whole = await run('', 'gpt2_wide', PROMPT, 8);
  console.log(JSON.stringify({ split, whole }));
  assert.equal(split.limit, LIMIT, 'the core splits at the lowered limit');
  assert.ok(whole.limit > 256000, `the adapter's own limit (${whole.limit}) holds the whole table`);
  assert.equal(split.ids.length, 8);
  assert.deepEqual(split.ids, whole.ids);
  assert.equal(split.text, whole.text);
  // and transformers' greedy ids, from its prompt typed as ids (weights without the tokenizer); then the whole
  // context in the Inspect view: its logits and lens are bound by rows, and give the lens of the unsplit page
  const exp = expected('gpt2_wide');
  const ids = await run(`&maxbinding=${LIMIT}`, 'gpt2_wide', exp.ids.join(' '), exp.greedy.length - exp.ids.length, names, LONG);
  assert.deepEqual(ids.ids, exp.greedy.slice(exp.ids.length), 'transformers\' greedy continuation');
  const lensWhole = await run('', 'gpt2_wide', exp.ids.join(' '), 1, names, LONG);
  assert.equal(ids.lens.length, 2 * 2 * 24, 'the lens after each block and each attention half, at every position');
  assert.deepEqual(ids.lens, lensWhole.lens, 'the same logit lens as with the adapter\'s own limit');
});

test('Llama with an untied f16 head and embedding split: transformers\' greedy ids, as with the adapter\'s own limit', { timeout: 600_000 }, async () => {
  const exp = expected('llama_wide_f16');
  const names = ['config.json', 'model.safetensors', 'generation_config.json'];
  const prompt = exp.ids.join(' ');
  const max = exp.greedy.length - exp.ids.length;
  const split = await run(`&maxbinding=${LIMIT}`, 'llama_wide_f16', prompt, max, names);
  const whole = await run('', 'llama_wide_f16', prompt, max, names);
  console.log(JSON.stringify({ split, whole }));
  assert.equal(split.limit, LIMIT);
  assert.deepEqual(split.ids, exp.greedy.slice(exp.ids.length), 'transformers\' greedy continuation');
  assert.deepEqual(split.ids, whole.ids);
});
