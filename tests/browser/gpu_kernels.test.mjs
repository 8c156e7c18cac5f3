// The GPU kernels the core picks for the page's adapter (src/gpu/policy.rs, KernelPolicy), in headless Chromium with
// WebGPU on SwiftShader: it must pick the variant chosen by measurement for SwiftShader (DECISIONS.md "Barrier-free
// kernels on CPU-emulated GPUs"), the model card must say so, and with that choice the page's greedy continuation of each
// shipped decoder must equal PyTorch's (models/<name>.json, greedy_ids), driven from the page's own UI: the
// sidecar's prompt (more than 8 tokens, so the prompt pass runs the prompt kernel) and 32 new tokens, through
// Generate. A missing model file is a failure, never a skip.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { setup, openPage, assertClean, REPO, shippedModels, assertModelFile, waitModel, setGenerate, generateAndWait } from './_harness.mjs';

// What the core must choose on SwiftShader (scripts/bench-peers-browser.mjs and bench-browser.mjs measured
// these there; DECISIONS.md "Barrier-free kernels on CPU-emulated GPUs"): 16-bit weights widened to f32 at load (widen16), for every checkpoint the
// barrier-free one-row kernels ('rows') for one-row passes, and for prompts (8 rows or more) the barrier-free
// kernels: register-blocked matmul, an invocation per attention row and per norm row.
const SWIFTSHADER_KERNELS = { fused: true, few_rows: 'rows', many_rows: 'reg', attention: 'rows', norms: 'rows', widen16: true };
const SWIFTSHADER_KERNELS_F32 = SWIFTSHADER_KERNELS;
const pick = (k) => ({ fused: k?.fused, few_rows: k?.few_rows, many_rows: k?.many_rows, attention: k?.attention, norms: k?.norms, widen16: k?.widen16 });

let env;
before(async () => {
  env = await setup({ webgpu: true });
});
after(async () => {
  await env?.close();
});

test('on SwiftShader the page runs the kernels chosen for it, and its greedy continuations equal PyTorch\'s', { timeout: 420_000 }, async () => {
  const models = shippedModels().filter((m) => ['shakespeare-llama', 'shakespeare-gpt', 'shakespeare-moe'].includes(m.id));
  assert.equal(models.length, 3);
  for (const m of models) assertModelFile(assert, m.file);
  const { page, context, log } = await openPage(env, '?nomodel=1&backend=gpu');
  try {
    await page.waitForFunction(() => window.tinyformer?.state.core, null, { timeout: 120_000 });
    const core = await page.evaluate(() => window.tinyformer.state.core);
    assert.equal(core.gpu?.ok, true, `a WebGPU adapter: ${JSON.stringify(core.gpu)}`);
    assert.equal(core.browserAdapter?.architecture, 'swiftshader', `the test browser's adapter: ${JSON.stringify(core.browserAdapter)}`);
    for (const m of models) {
      const side = JSON.parse(fs.readFileSync(path.join(REPO, m.sidecar), 'utf8'));
      await page.click(`#model-list button[data-model="${m.id}"]`);
      await waitModel(page, m.id);
      assert.equal(await page.evaluate(() => document.body.dataset.backend), 'gpu', `${m.id}: "Run on" WebGPU`);

      // the worker's choice, and what the model card shows of it
      const kernels = await page.evaluate(() => window.tinyformer.call('gpuKernels'));
      assert.deepEqual(pick(kernels), SWIFTSHADER_KERNELS, m.id);
      const shown = await page.getAttribute('#model-table tr[data-field="gpu_kernels"]', 'data-value');
      assert.equal(shown, `fused,${SWIFTSHADER_KERNELS.few_rows},${SWIFTSHADER_KERNELS.many_rows}`, `${m.id}: the model card`);
      assert.equal(side.dtype, 'F16', `${m.id} ships 16-bit weights`);

      // PyTorch's greedy continuation, through the page's Generate
      const want = side.greedy_ids.length > side.prompt_ids.length ? side.greedy_ids.slice(side.prompt_ids.length) : side.greedy_ids;
      assert.ok(side.prompt_ids.length >= 8, `${m.id}: a prompt of 8 tokens or more runs the prompt kernel`);
      await setGenerate(page, { prompt: side.prompt, temperature: 0, max: want.length, kv: true });
      const before = await page.evaluate(() => window.tinyformer.call('gpuKernels'));
      const out = await generateAndWait(page);
      const after = await page.evaluate(() => window.tinyformer.call('gpuKernels'));
      console.log(`${m.id}: ${out.count} tokens at ${out.tps} tokens/s, K up to ${await page.evaluate(() => document.body.dataset.tokensPerSubmit)}, ` +
        `${after.submits - before.submits} submissions, ${after.dispatches - before.dispatches} dispatches`);
      assert.equal(out.state, 'done', out.error);
      assert.deepEqual(out.ids, want, `${m.id}: the WebGPU path's greedy ids with the SwiftShader kernels`);
      assert.ok(after.dispatches > before.dispatches, `${m.id}: the generation ran on the GPU`);
    }
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});

test('on SwiftShader an f32 checkpoint decodes with the barrier-free one-row kernels, and its greedy ids equal PyTorch\'s', { timeout: 240_000 }, async () => {
  const fx = JSON.parse(fs.readFileSync(path.join(REPO, 'tests/fixtures/models/llama_gqa.json'), 'utf8'));
  assert.equal(fx.dtype ?? 'F32', 'F32');
  const { page, context, log } = await openPage(env, '?model=tests/fixtures/models/llama_gqa.safetensors&backend=gpu');
  try {
    await waitModel(page, 'llama_gqa.safetensors');
    assert.equal(await page.evaluate(() => document.body.dataset.backend), 'gpu');
    assert.deepEqual(pick(await page.evaluate(() => window.tinyformer.call('gpuKernels'))), SWIFTSHADER_KERNELS_F32);
    assert.equal(await page.getAttribute('#model-table tr[data-field="gpu_kernels"]', 'data-value'),
      `fused,${SWIFTSHADER_KERNELS_F32.few_rows},${SWIFTSHADER_KERNELS_F32.many_rows}`);
    const { prompt_ids: prompt, max_new_tokens: n, ids } = fx.greedy;
    await setGenerate(page, { prompt: prompt.join(' '), temperature: 0, max: n, kv: true });
    const out = await generateAndWait(page);
    assert.equal(out.state, 'done', out.error);
    assert.deepEqual(out.ids, ids.slice(prompt.length, prompt.length + n), 'the WebGPU path\'s greedy ids with the f32 SwiftShader kernels');
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});
