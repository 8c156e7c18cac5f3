// The page's memory budget comes from the WebGPU adapter's limits: with the binding limit
// lowered through the core's test hook (debug_lower_binding_limit; SwiftShader's own limit is larger
// than any shipped tensor), loading a shipped model is refused with one line naming the buffer, the
// limit, the total and the biggest buffers, before anything is allocated; the previous model stays
// loaded and working, and with the device's own limit the same file loads.
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

test('a buffer over maxStorageBufferBindingSize is refused in one line and the page stays usable', { timeout: 120_000 }, async () => {
  const { page, context, log } = await openPage(env, '?nomodel=1');
  try {
    const r = await page.evaluate(async () => {
      const core = await import('/www/pkg/tinyformer.js');
      await core.default();
      const g = await core.gpu_init();
      const bytes = new Uint8Array(await (await fetch('/models/shakespeare-gpt.safetensors')).arrayBuffer());
      const first = await core.load_model(bytes, true);
      const buffersBefore = core.gpu_memory();
      core.debug_lower_binding_limit(4096);
      let error = null;
      try {
        await core.load_model(bytes, true);
      } catch (e) {
        error = String(e?.message ?? e);
      }
      const buffersAfter = core.gpu_memory();
      // the model loaded first still answers
      const out = await core.forward(Uint32Array.from([1, 5, 9]), undefined, Uint32Array.from([0]));
      core.debug_lower_binding_limit(0);
      const again = await core.load_model(bytes, true);
      core.reset();
      return {
        ok: g.ok, first: first.arch, error, buffersBefore, buffersAfter,
        rows: out.logits.rows, layers: out.attention.map((m) => m.layer), again: again.arch,
      };
    });
    console.log(JSON.stringify(r));
    assert.equal(r.ok, true, 'WebGPU on SwiftShader');
    assert.ok(r.error, 'the load is refused');
    assert.ok(!r.error.includes('\n') && r.error.length < 600, r.error);
    assert.match(r.error, /the model needs one \w[\w ]* buffer of [\d.]+ [KMG]iB \(\d+ bytes; .*\), over this GPU's maxStorageBufferBindingSize of 4\.0 KiB \(4096 bytes\); in all it needs [\d.]+ [KMG]iB: biggest buffers: weights /);
    assert.deepEqual(r.buffersAfter, r.buffersBefore, 'nothing was allocated for the refused model');
    assert.equal(r.rows, 3, 'the previous model still runs');
    assert.deepEqual(r.layers, [0], 'only the attention maps asked for come back');
    assert.equal(r.again, r.first, 'with the device\'s own limit the file loads');
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});
