// Training in the browser: the wasm core trains every model family of tests/fixtures/train (the seed
// decoder, GPT-2, the Llama, the MoE decoder, an attention-only decoder, the encoder-decoder) for 10
// AdamW steps on its fast CPU backend (wasm SIMD) and on our WGSL kernels through WebGPU (SwiftShader
// here), and src/train/check.rs holds both to PyTorch autograd with the native tests' tolerances: the
// step-1 gradients, every step's loss, gradient norm and learning rate, every parameter after.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setup, openPage, assertClean } from './_harness.mjs';

const FIXTURES = ['gpt_sin', 'gpt2', 'llama', 'moe', 'attn_only', 'encdec'];

let env;
before(async () => {
  env = await setup({ webgpu: true });
});
after(async () => {
  await env?.close();
});

test('the wasm core trains every family as PyTorch does, on the CPU and on WebGPU', { timeout: 240_000 }, async () => {
  const { page, context, log } = await openPage(env, 'index.html?nomodel=1');
  try {
    const res = await page.evaluate(async (names) => {
      const core = await import('/www/pkg/tinyformer.js');
      await core.default();
      const init = await core.gpu_init();
      const bytes = async (p) => new Uint8Array(await (await fetch(p)).arrayBuffer());
      const out = { adapter: init.ok ? init.adapter : null, runs: [] };
      for (const name of names) {
        const dir = `/tests/fixtures/train/${name}`;
        const [model, batches, expect] = [await bytes(`${dir}.init.safetensors`), await (await fetch(`${dir}.batches.json`)).text(), await bytes(`${dir}.expect.safetensors`)];
        for (const gpu of [false, true]) {
          try {
            out.runs.push({ name, gpu, report: await core.train_fixture_check(model, batches, expect, gpu) });
          } catch (e) {
            out.runs.push({ name, gpu, error: String(e) });
          }
        }
      }
      return out;
    }, FIXTURES);
    assert.ok(res.adapter, 'a WebGPU adapter (SwiftShader) was found');
    assert.equal(res.runs.length, FIXTURES.length * 2);
    for (const r of res.runs) {
      const where = `${r.name} on ${r.gpu ? 'WebGPU' : 'the wasm CPU'}`;
      assert.equal(r.error, undefined, `${where}: ${r.error}`);
      assert.deepEqual(r.report.failures, [], `${where}: values outside PyTorch's tolerances`);
      assert.equal(r.report.steps, 10, `${where}: steps checked`);
      assert.ok(r.report.losses.every(Number.isFinite), `${where}: losses`);
      console.log(`${where}: loss rel ${r.report.max_loss_rel.toExponential(1)}, gradient abs ${r.report.max_grad_abs.toExponential(1)}, final abs ${r.report.max_final_abs.toExponential(1)}`);
    }
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});
