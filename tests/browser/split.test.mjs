// Tables split across storage bindings in the page (ARCHITECTURE.md, "Tables split across bindings"): with
// ?maxbinding=100000 the worker asks the core for a 100,000-byte maxStorageBufferBindingSize (www/worker.js ->
// gpu_init), so the wide fixtures' embeddings and heads (1000 x 64: 256,000 bytes f32, 128,000 f16;
// train/hf_split_fixtures.py) are bound in ranges of rows while every other buffer fits. Loaded through the
// page's own UI on WebGPU (SwiftShader), greedy generation must give the same ids and text as the page without
// the lowered limit, and transformers' own (expected.json).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { setup, openPage, assertClean, REPO, setGenerate, generateAndWait } from './_harness.mjs';

const FIX = path.join(REPO, 'tests/fixtures/hf_models');
const LIMIT = 100000;
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

/** Loads `dir` (all its files, or `names`) through the file picker on WebGPU, then generates greedily from `prompt`. */
async function run(query, dir, prompt, max, names) {
  const { page, context, log } = await openPage(env, `?nomodel=1&backend=gpu${query}`);
  try {
    await page.waitForSelector('#device-limits tr[data-limit="max_storage_buffer_binding_size"]', { timeout: 120_000 });
    const limit = Number(await page.getAttribute('#device-limits tr[data-limit="max_storage_buffer_binding_size"]', 'data-value'));
    await page.setInputFiles('#model-file', files(dir, names));
    await waitLoaded(page);
    await setGenerate(page, { prompt, temperature: 0, max });
    const out = await generateAndWait(page);
    assert.equal(out.state, 'done', out.error);
    assertClean(assert, log);
    return { limit, ids: out.ids, text: out.text };
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

test('GPT-2 with its tied 1000 x 64 f32 embedding in three bindings: the same text and ids as with the adapter\'s own limit', { timeout: 600_000 }, async () => {
  const split = await run(`&maxbinding=${LIMIT}`, 'gpt2_wide', PROMPT, 8);
  const whole = await run('', 'gpt2_wide', PROMPT, 8);
  console.log(JSON.stringify({ split, whole }));
  assert.equal(split.limit, LIMIT, 'the core splits at the lowered limit');
  assert.ok(whole.limit > 256000, `the adapter's own limit (${whole.limit}) holds the whole table`);
  assert.equal(split.ids.length, 8);
  assert.deepEqual(split.ids, whole.ids);
  assert.equal(split.text, whole.text);
  // and transformers' greedy ids, from its prompt typed as ids (weights without the tokenizer)
  const exp = expected('gpt2_wide');
  const names = ['config.json', 'model.safetensors', 'generation_config.json'];
  const ids = await run(`&maxbinding=${LIMIT}`, 'gpt2_wide', exp.ids.join(' '), exp.greedy.length - exp.ids.length, names);
  assert.deepEqual(ids.ids, exp.greedy.slice(exp.ids.length), 'transformers\' greedy continuation');
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
