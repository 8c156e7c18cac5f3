// The page's CPU path is the fast backend (src/fastcpu, wasm simd128): in headless Chromium, with the
// wasm core loaded on the CPU (load_model(bytes, false)), every decoder / llama / MoE / encoder-decoder
// fixture gives PyTorch's logits within 1e-3 abs + 1e-3 rel (as tests/model_fixtures.rs) and its
// attention maps within 1e-4, and the shipped models continue their prompts with the same greedy ids
// PyTorch recorded (models/<name>.json), which the reference CPU path gave before.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { setup, openPage, assertClean } from './_harness.mjs';

const LOGIT_ATOL = 1e-3;
const LOGIT_RTOL = 1e-3;
const ATTN_ATOL = 1e-4;

let env;
before(async () => {
  env = await setup({ webgpu: false });
});
after(async () => {
  await env?.close();
});

const flat = (v) => (Array.isArray(v) ? v.flatMap(flat) : [typeof v === 'boolean' ? Number(v) : v]);

test('the wasm CPU path matches PyTorch on every fixture and the shipped greedy continuations', { timeout: 240_000 }, async () => {
  const fixtures = fs.readdirSync('tests/fixtures/models').filter((f) => f.endsWith('.json')).sort()
    .map((f) => JSON.parse(fs.readFileSync(`tests/fixtures/models/${f}`, 'utf8')));
  assert.ok(fixtures.length >= 10, `fixtures: ${fixtures.length}`);
  const shipped = ['shakespeare-gpt', 'shakespeare-llama', 'shakespeare-moe']
    .map((n) => ({ name: n, ...JSON.parse(fs.readFileSync(`models/${n}.json`, 'utf8')) }));
  const { page, context, log } = await openPage(env, 'index.html?nomodel=1');
  try {
    const res = await page.evaluate(async ({ fixtures, shipped }) => {
      const core = await import('/www/pkg/tinyformer.js');
      await core.default();
      const out = { fixtures: [], shipped: [] };
      for (const fx of fixtures) {
        const bytes = new Uint8Array(await (await fetch(`/tests/fixtures/models/${fx.checkpoint}`)).arrayBuffer());
        const card = await core.load_model(bytes, false);
        const r = fx.inputs.src_ids
          ? await core.forward(new Uint32Array(fx.inputs.src_ids), new Uint32Array(fx.inputs.tgt_ids))
          : await core.forward(new Uint32Array(fx.inputs.ids));
        out.fixtures.push({
          name: fx.name,
          backend: card.backend,
          logits: Array.from(r.logits.data),
          attention: r.attention.map((m) => ({ kind: m.kind, layer: m.layer, data: Array.from(m.data) })),
        });
      }
      for (const s of shipped) {
        const bytes = new Uint8Array(await (await fetch(`/models/${s.name}.safetensors`)).arrayBuffer());
        const card = await core.load_model(bytes, false);
        const n = s.greedy_ids.length - (s.greedy_ids.length > s.prompt_ids.length ? s.prompt_ids.length : 0);
        core.gen_start(new Uint32Array(s.prompt_ids), { max_new_tokens: n });
        const ids = [];
        for (;;) {
          const t = await core.gen_next();
          if (!t || t.done && t.id === undefined) break;
          ids.push(t.id);
          if (t.done) break;
        }
        out.shipped.push({ name: s.name, backend: card.backend, ids });
      }
      return out;
    }, { fixtures, shipped });
    for (const [i, fx] of fixtures.entries()) {
      const got = res.fixtures[i];
      assert.equal(got.backend, 'cpu', fx.name);
      const want = flat(fx.logits);
      assert.equal(got.logits.length, want.length, `${fx.name} logits`);
      let dl = 0;
      got.logits.forEach((g, j) => {
        const d = Math.abs(g - want[j]);
        dl = Math.max(dl, d);
        assert.ok(d <= LOGIT_ATOL + LOGIT_RTOL * Math.abs(want[j]), `${fx.name} logits[${j}]: wasm ${g}, PyTorch ${want[j]}`);
      });
      let da = 0;
      assert.equal(got.attention.length, fx.attention.length, `${fx.name} maps`);
      got.attention.forEach((m, k) => {
        const w = flat(fx.attention[k].weights);
        assert.equal(m.kind, fx.attention[k].kind);
        m.data.forEach((g, j) => {
          const d = Math.abs(g - w[j]);
          da = Math.max(da, d);
          assert.ok(d <= ATTN_ATOL, `${fx.name} ${m.kind} layer ${m.layer} attention[${j}]: wasm ${g}, PyTorch ${w[j]}`);
        });
      });
      console.log(`${fx.name}: logits max|diff| ${dl.toExponential(2)}, attention ${da.toExponential(2)}`);
    }
    for (const [i, s] of shipped.entries()) {
      const got = res.shipped[i];
      const want = s.greedy_ids.length > s.prompt_ids.length ? s.greedy_ids.slice(s.prompt_ids.length) : s.greedy_ids;
      assert.equal(got.backend, 'cpu');
      assert.deepEqual(got.ids, want, `${s.name}: greedy continuation on the wasm CPU path`);
      console.log(`${s.name}: ${got.ids.length} greedy ids equal PyTorch's`);
    }
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});
