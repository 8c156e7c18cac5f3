// The page's CPU path is the fast backend (src/fastcpu, wasm simd128): in headless Chromium, with the
// wasm core loaded on the CPU (load_model(bytes, false)), every decoder / llama / MoE / encoder-decoder
// fixture gives PyTorch's logits within 1e-3 abs + 1e-3 rel (as tests/model_fixtures.rs) and its
// attention maps within 1e-4, and the shipped models continue their prompts with the same greedy ids
// PyTorch recorded (models/<name>.json), which the reference CPU path gave before.
// The same holds for the relaxed-SIMD build (www/pkg-relaxed, scripts/build-wasm.sh), whose GEMM and GEMV use
// f32x4.relaxed_madd; its values also stay within RELAXED_ATOL + RELAXED_RTOL of the plain build's, and the
// page's worker loads it in this Chromium (which has relaxed SIMD).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { setup, openPage, assertClean } from './_harness.mjs';

const LOGIT_ATOL = 1e-3;
const LOGIT_RTOL = 1e-3;
const ATTN_ATOL = 1e-4;
// relaxed vs plain build: relaxed_madd may round once (FMA) where mul + add rounds twice, ~6e-8 relative
// per product; over K <= 768 and a few layers the fixtures differ by at most 3.8e-6 (Chromium 156 on an
// x86-64 with FMA, 2026-12-01: 7290 of 11876 logits and map values differ at all).
const RELAXED_ATOL = 2e-5;
const RELAXED_RTOL = 1e-5;
// A module with one function doing f32x4.relaxed_madd, as www/worker.js probes with.
const RELAXED_SIMD_PROBE = [0, 97, 115, 109, 1, 0, 0, 0, 1, 8, 1, 96, 3, 123, 123, 123, 1, 123, 3, 2, 1, 0,
  10, 13, 1, 11, 0, 32, 0, 32, 1, 32, 2, 253, 133, 2, 11];

let env;
before(async () => {
  env = await setup({ webgpu: false });
});
after(async () => {
  await env?.close();
});

const flat = (v) => (Array.isArray(v) ? v.flatMap(flat) : [typeof v === 'boolean' ? Number(v) : v]);

function inputs() {
  const fixtures = fs.readdirSync('tests/fixtures/models').filter((f) => f.endsWith('.json')).sort()
    .map((f) => JSON.parse(fs.readFileSync(`tests/fixtures/models/${f}`, 'utf8')));
  assert.ok(fixtures.length >= 10, `fixtures: ${fixtures.length}`);
  const shipped = ['shakespeare-gpt', 'shakespeare-llama', 'shakespeare-moe']
    .map((n) => ({ name: n, ...JSON.parse(fs.readFileSync(`models/${n}.json`, 'utf8')) }));
  return { fixtures, shipped };
}

// In the page: imports the build at `pkg`, runs every fixture's forward and every shipped model's greedy
// continuation on the CPU path; returns the build's isa, logits, maps and ids.
async function runBuild(page, pkg, { fixtures, shipped }) {
  return page.evaluate(async ({ pkg, fixtures, shipped }) => {
    const core = await import(pkg);
    await core.default();
    // the fast attention against its reference twin over a shape sweep, in this build (src/fastcpu/check.rs)
    const out = { isa: core.cpu_isa(), attentionSweep: core.fastcpu_attention_check(), dwSweep: core.fastcpu_train_check(), halfSweep: core.fastcpu_half_check(), fixtures: [], shipped: [] };
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
  }, { pkg, fixtures, shipped });
}

// Every fixture within the PyTorch tolerances, every shipped continuation equal to PyTorch's; the
// attention sweep (heads of 4-48 values, 1-128 query rows, causal or masked) within its tolerances,
// 1e-5 abs + 1e-4 rel against the f64 reference (written in src/fastcpu/check.rs).
function checkAgainstPyTorch(res, { fixtures, shipped }, label) {
  const sw = res.attentionSweep;
  assert.deepEqual(sw.failures, [], `${label}: fast attention vs the reference`);
  assert.equal(sw.cases, 4 * 7 * 8 * 2, `${label}: every attention shape ran`);
  console.log(`${label} attention sweep: ${sw.cases} shapes, max|diff| ${sw.max_abs_diff.toExponential(2)}`);
  // the training's dW = dY^T X (the page's 4-row x 8-column tiles) on shapes around its tiles, whole and in
  // row blocks (the same bits), within 1e-4 abs + 1e-4 rel of the f64 reference (src/fastcpu/check.rs)
  const dw = res.dwSweep;
  assert.deepEqual(dw.failures, [], `${label}: fast dW vs the reference`);
  assert.equal(dw.cases, 5 * 7 * 8, `${label}: every dW shape ran`);
  assert.ok(dw.max_abs_diff > 0 && dw.max_abs_diff <= 1e-4, `${label}: dW max|diff| ${dw.max_abs_diff}`);
  console.log(`${label} dW sweep: ${dw.cases} shapes, max|diff| ${dw.max_abs_diff.toExponential(2)}`);
  // 16-bit weights kept 16-bit: the simd128 widening of all 65,536 f16 and bf16 patterns equals the `half`
  // crate's, and the GEMV / GEMM over 16-bit panels equals the widened f32 panels', bit for bit (no
  // tolerance: src/fastcpu/check.rs half_sweep)
  const hs = res.halfSweep;
  assert.deepEqual(hs.failures, [], `${label}: 16-bit panels vs widened`);
  assert.equal(hs.cases, 2 + 2 * 5 * 6 * 5 * 2, `${label}: every 16-bit case ran`);
  console.log(`${label} 16-bit sweep: ${hs.cases} cases, bit for bit`);
  for (const [i, fx] of fixtures.entries()) {
    const got = res.fixtures[i];
    assert.equal(got.backend, 'cpu', fx.name);
    const want = flat(fx.logits);
    assert.equal(got.logits.length, want.length, `${fx.name} logits`);
    let dl = 0;
    got.logits.forEach((g, j) => {
      const d = Math.abs(g - want[j]);
      dl = Math.max(dl, d);
      assert.ok(d <= LOGIT_ATOL + LOGIT_RTOL * Math.abs(want[j]), `${label} ${fx.name} logits[${j}]: wasm ${g}, PyTorch ${want[j]}`);
    });
    let da = 0;
    assert.equal(got.attention.length, fx.attention.length, `${fx.name} maps`);
    got.attention.forEach((m, k) => {
      const w = flat(fx.attention[k].weights);
      assert.equal(m.kind, fx.attention[k].kind);
      m.data.forEach((g, j) => {
        const d = Math.abs(g - w[j]);
        da = Math.max(da, d);
        assert.ok(d <= ATTN_ATOL, `${label} ${fx.name} ${m.kind} layer ${m.layer} attention[${j}]: wasm ${g}, PyTorch ${w[j]}`);
      });
    });
    console.log(`${label} ${fx.name}: logits max|diff| ${dl.toExponential(2)}, attention ${da.toExponential(2)}`);
  }
  for (const [i, s] of shipped.entries()) {
    const got = res.shipped[i];
    const want = s.greedy_ids.length > s.prompt_ids.length ? s.greedy_ids.slice(s.prompt_ids.length) : s.greedy_ids;
    assert.equal(got.backend, 'cpu');
    assert.deepEqual(got.ids, want, `${label} ${s.name}: greedy continuation on the wasm CPU path`);
    console.log(`${label} ${s.name}: ${got.ids.length} greedy ids equal PyTorch's`);
  }
}

let plain = null; // the plain build's results, which the relaxed build is compared with

test('the wasm CPU path matches PyTorch on every fixture and the shipped greedy continuations', { timeout: 240_000 }, async () => {
  const inp = inputs();
  const { page, context, log } = await openPage(env, 'index.html?nomodel=1');
  try {
    const res = await runBuild(page, '/www/pkg/tinyformer.js', inp);
    plain = res;
    assert.equal(res.isa, 'simd128', 'www/pkg is the plain simd128 build');
    checkAgainstPyTorch(res, inp, 'simd128');
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});

test('the relaxed-SIMD build matches PyTorch and the plain build, and the page loads it here', { timeout: 240_000 }, async () => {
  const inp = inputs();
  const { page, context, log } = await openPage(env, 'index.html?nomodel=1');
  try {
    // the page's worker probed for relaxed SIMD and loaded www/pkg-relaxed (the device card says which)
    assert.equal(await page.evaluate((b) => WebAssembly.validate(new Uint8Array(b)), RELAXED_SIMD_PROBE), true,
      'this Chromium has relaxed SIMD');
    await page.waitForSelector('#core-build', { timeout: 60_000 });
    const build = await page.locator('#core-build').innerText();
    console.log(`device card: ${build}`);
    assert.match(build, /simd128\+relaxed-simd build/);

    const res = await runBuild(page, '/www/pkg-relaxed/tinyformer.js', inp);
    assert.equal(res.isa, 'simd128+relaxed-simd', 'www/pkg-relaxed was built with +relaxed-simd');
    checkAgainstPyTorch(res, inp, 'relaxed');
    assert.ok(plain, 'the plain build ran first');
    let differ = 0;
    let total = 0;
    let worst = 0;
    res.fixtures.forEach((fx, i) => {
      const p = plain.fixtures[i];
      const pairs = [[fx.logits, p.logits], ...fx.attention.map((m, k) => [m.data, p.attention[k].data])];
      for (const [a, b] of pairs) {
        assert.equal(a.length, b.length, fx.name);
        a.forEach((x, j) => {
          const d = Math.abs(x - b[j]);
          total += 1;
          if (d > 0) differ += 1;
          worst = Math.max(worst, d);
          assert.ok(d <= RELAXED_ATOL + RELAXED_RTOL * Math.abs(b[j]), `${fx.name}[${j}]: relaxed ${x}, plain ${b[j]}`);
        });
      }
    });
    res.shipped.forEach((s, i) => assert.deepEqual(s.ids, plain.shipped[i].ids, `${s.name}: relaxed and plain greedy ids`));
    console.log(`relaxed vs plain: ${differ} of ${total} values differ (FMA rounding), max |diff| ${worst.toExponential(2)}`);
    assertClean(assert, log);
  } finally {
    await context.close();
  }
});
