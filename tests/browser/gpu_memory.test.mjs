// GPU memory in the page stays flat over 20 load/unload cycles: the wasm core, loaded on the
// page's own thread, loads a shipped model on SwiftShader's WebGPU, and after each reset the count and
// bytes of live GPU buffers (gpu_memory(), counted where buffers are created and destroyed) are back to
// where they started. In the browser dropping a wgpu buffer frees nothing by itself: GpuTensor's Drop destroys each one.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setup, openPage, assertClean } from './_harness.mjs';

let env;
before(async () => {
  env = await setup();
});
after(async () => {
  await env?.close();
});

test('20 loads and resets of a model leave no GPU buffer behind', { timeout: 240_000 }, async () => {
  const { page, context, log } = await openPage(env, '?nomodel=1');
  try {
    const r = await page.evaluate(async () => {
      const core = await import('/www/pkg/tinyformer.js');
      await core.default();
      const g = await core.gpu_init();
      const bytes = new Uint8Array(await (await fetch('/models/shakespeare-gpt.safetensors')).arrayBuffer());
      const start = core.gpu_memory();
      const cycles = [];
      for (let i = 0; i < 20; i++) {
        await core.load_model(bytes, true);
        const loaded = core.gpu_memory();
        core.reset();
        cycles.push({ loaded, after: core.gpu_memory() });
      }
      return { ok: g.ok, start, cycles };
    });
    console.log(JSON.stringify({ start: r.start, first: r.cycles[0], last: r.cycles[19] }));
    assert.equal(r.ok, true, 'WebGPU on SwiftShader');
    assert.deepEqual(r.start, { buffers: 0, bytes: 0 });
    assert.equal(r.cycles.length, 20);
    for (const [i, c] of r.cycles.entries()) {
      assert.ok(c.loaded.buffers > 50 && c.loaded.bytes > 4_000_000, `cycle ${i}: the model's buffers are counted: ${JSON.stringify(c.loaded)}`);
      assert.deepEqual(c.loaded, r.cycles[0].loaded, `cycle ${i}: every load allocates the same`);
      assert.deepEqual(c.after, r.start, `cycle ${i}: buffers left after reset`);
    }
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});

test('20 training runs started and stopped leave the GPU buffers and the wasm memory where one run leaves them', { timeout: 240_000 }, async () => {
  const { page, context, log } = await openPage(env, '?nomodel=1');
  try {
    const r = await page.evaluate(async () => {
      const core = await import('/www/pkg/tinyformer.js');
      const wasm = await core.default();
      const g = await core.gpu_init();
      const spec = { preset: 'induction', layers: 2, heads: 2, dim: 32, context: 16, vocab: 16, batch: 8, steps: 1000, seed: 7 };
      const start = core.gpu_memory();
      const cycles = [];
      for (let i = 0; i < 20; i++) {
        for (const gpu of [true, false]) {
          await core.train_start(spec, undefined, gpu);
          await core.train_run(5, 5); // a few steps, then stopped mid-run
          const during = gpu ? core.gpu_memory() : null;
          await core.train_probe(undefined);
          core.train_end();
          cycles.push({ gpu, during, after: core.gpu_memory(), wasm: wasm.memory.buffer.byteLength });
        }
      }
      return { ok: g.ok, start, cycles };
    });
    const first = r.cycles.slice(0, 2);
    const last = r.cycles.slice(-2);
    console.log(JSON.stringify({ start: r.start, first, last }));
    assert.equal(r.ok, true, 'WebGPU on SwiftShader');
    for (const [i, c] of r.cycles.entries()) {
      if (c.gpu) assert.ok(c.during.buffers > 10 && c.during.bytes > 100_000, `cycle ${i}: the run's buffers are counted: ${JSON.stringify(c.during)}`);
      assert.deepEqual(c.after, r.start, `cycle ${i}: GPU buffers left after the run ended`);
    }
    // wasm memory only grows; after the first runs it must not keep growing
    assert.equal(last[1].wasm, first[1].wasm, `wasm memory: ${first[1].wasm} after one cycle, ${last[1].wasm} after 20`);
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});
