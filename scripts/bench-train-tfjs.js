// The TensorFlow.js side of scripts/bench-train-peers.mjs: nanoGPT's baby GPT written with TF.js ops, trained with
// tf.variableGrads + an Adam optimizer, the same model and step as the page's Shakespeare preset (src/train/lab.rs):
//   token embedding [V, 128] (tied head), learned positions [64, 128], 4 pre-norm blocks (LayerNorm with bias;
//   causal 4-head attention, fused QKV [128, 384] + bias, output projection + bias; MLP 128 -> 512 -> 128 with
//   GELU-tanh, biases), final LayerNorm, logits = x @ wte^T, loss = mean cross-entropy over the B x T positions;
//   GPT-2 init (N(0, 0.02), residual projections 0.02 / sqrt(2 L), positions 0.01: params.rs);
//   a step = forward + backward, the global gradient norm clipped to 1.0, Adam (tf.train.adam, betas 0.9/0.99,
//   eps 1e-8) and then decoupled weight decay 0.1 on the matrices (w -= lr * wd * w: AdamW, as ours), at a
//   constant lr of 1e-3 (the preset's schedule changes only the lr's value, not the work).
// The embedding is a one-hot matmul, not tf.gather: gather's gradient needs UnsortedSegmentSum, which the wasm
// backend of tfjs 4.22 does not register. GELU-tanh is written out (no Gelu kernel in either backend), x^3 as x*x*x.
// Tuned for TF.js's wasm backend, so that the peer is not a strawman (measured in Chromium 156, tfjs 4.22, 1 thread):
// its BatchMatMul runs XNNPACK only without transpose flags, and a transposed operand takes a plain loop (x^T dy for
// [768,128] x [768,512]: 160 ms, against 0.6 ms to transpose x and 7 ms for the plain product), and a 5-D
// Transpose costs 42 ms where the 4-D one costs 2.4 ms. So with `explicitTranspose` (the default on wasm) every
// product is `mm`: a tf.customGrad whose backward transposes its operands explicitly and multiplies them without
// flags, and the fused QKV is split and transposed per tensor in 4-D. The webgpu backend handles transposed operands
// in its shaders: there the plain tf.matMul (with its own gradient) is used unless the bench says otherwise.
// No imports: `tf` is passed in (the bench page's bundle, or @tensorflow/tfjs in Node for a check).

/** A small seeded PRNG (mulberry32) and a Box-Muller normal. */
function rng(seed) {
  let a = seed >>> 0;
  const u = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const normal = () => Math.sqrt(-2 * Math.log(1 - u())) * Math.cos(2 * Math.PI * u());
  return { u, normal };
}

/**
 * The text as ids, as src/train/fresh.rs char_tokenizer numbers it: three special tokens first, then the text's
 * distinct characters in code-point order (so the vocabulary, hence the embedding, is the same size as ours).
 */
export function charData(text) {
  const SPECIALS = 3;
  const chars = [...new Set(text)].sort((a, b) => a.codePointAt(0) - b.codePointAt(0));
  const index = new Map(chars.map((c, i) => [c, SPECIALS + i]));
  const ids = Int32Array.from(text, (c) => index.get(c));
  return { vocab: SPECIALS + chars.length, ids };
}

/**
 * createGpt(tf, {vocab, layers, heads, dim, context, batch, seed, lr}) -> {params, step(xs, ys) -> loss,
 * batch(r) -> [xs, ys] arrays}. xs, ys: Int32Array(batch * context).
 */
export function createGpt(tf, { vocab, layers = 4, heads = 4, dim = 128, context = 64, batch = 12, seed = 1337, lr = 1e-3,
  weightDecay = 0.1, clip = 1.0, explicitTranspose = tf.getBackend() === 'wasm' }) {
  const r = rng(seed);
  const ff = 4 * dim;
  const hd = dim / heads;
  const decayed = [];
  const all = [];
  const normal = (shape, std, decay) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const v = new Float32Array(n);
    for (let i = 0; i < n; i++) v[i] = std * r.normal();
    const t = tf.variable(tf.tensor(v, shape));
    all.push(t);
    if (decay) decayed.push(t);
    return t;
  };
  const konst = (shape, value) => {
    const t = tf.variable(tf.fill(shape, value));
    all.push(t);
    return t;
  };
  const resid = 0.02 / Math.sqrt(2 * layers);
  const wte = normal([vocab, dim], 0.02, true);
  const wpe = normal([context, dim], 0.01, true);
  const blocks = Array.from({ length: layers }, () => ({
    ln1g: konst([dim], 1), ln1b: konst([dim], 0),
    wqkv: normal([dim, 3 * dim], 0.02, true), bqkv: konst([3 * dim], 0),
    wo: normal([dim, dim], resid, true), bo: konst([dim], 0),
    ln2g: konst([dim], 1), ln2b: konst([dim], 0),
    w1: normal([dim, ff], 0.02, true), b1: konst([ff], 0),
    w2: normal([ff, dim], resid, true), b2: konst([dim], 0),
  }));
  const lnfg = konst([dim], 1);
  const lnfb = konst([dim], 0);
  const params = all.reduce((n, v) => n + v.size, 0);

  // a constant additive causal mask [T, T]: 0 on and below the diagonal, -1e9 above
  const mask = tf.tidy(() => tf.mul(tf.sub(1, tf.linalg.bandPart(tf.ones([context, context]), -1, 0)), -1e9));
  const layerNorm = (x, g, b) => {
    const { mean, variance } = tf.moments(x, -1, true);
    return tf.add(tf.mul(tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, 1e-5))), g), b);
  };
  const C = Math.sqrt(2 / Math.PI);
  const gelu = (x) => tf.mul(tf.mul(x, 0.5), tf.add(1, tf.tanh(tf.mul(tf.add(x, tf.mul(tf.mul(tf.mul(x, x), x), 0.044715)), C))));
  // a @ b (any rank >= 2, same batch dims): with explicitTranspose, a backward of flag-free products
  const swap = (t) => tf.transpose(t, [...t.shape.keys()].map((i, _, a) => (i < a.length - 2 ? i : 2 * a.length - 3 - i)));
  const mmGrad = tf.customGrad((a, b, save) => {
    save([a, b]);
    return { value: tf.matMul(a, b), gradFunc: (dy, [sa, sb]) => [tf.matMul(dy, swap(sb)), tf.matMul(swap(sa), dy)] };
  });
  const mm = explicitTranspose ? mmGrad : (a, b) => tf.matMul(a, b);
  // a @ b^T
  const mmT = explicitTranspose ? (a, b) => mmGrad(a, swap(b)) : (a, b) => tf.matMul(a, b, false, true);
  const dense = (x2, w, b) => tf.add(mm(x2, w), b);
  const heads4 = (t) => t.reshape([batch, context, heads, hd]).transpose([0, 2, 1, 3]); // [B, H, T, hd]

  const B = batch;
  const T = context;
  const lossOf = (xs, ys) => {
    const n = B * T;
    let x = mm(tf.oneHot(xs, vocab), wte); // [n, C]
    x = tf.add(x.reshape([B, T, dim]), wpe).reshape([n, dim]);
    for (const k of blocks) {
      const h = layerNorm(x, k.ln1g, k.ln1b);
      const [q, kk, v] = tf.split(dense(h, k.wqkv, k.bqkv), 3, 1).map(heads4);
      const att = tf.softmax(tf.add(tf.mul(mmT(q, kk), 1 / Math.sqrt(hd)), mask));
      const y = mm(att, v).transpose([0, 2, 1, 3]).reshape([n, dim]);
      x = tf.add(x, dense(y, k.wo, k.bo));
      const h2 = layerNorm(x, k.ln2g, k.ln2b);
      x = tf.add(x, dense(gelu(dense(h2, k.w1, k.b1)), k.w2, k.b2));
    }
    const logits = mmT(layerNorm(x, lnfg, lnfb), wte); // [n, V]
    return tf.losses.softmaxCrossEntropy(tf.oneHot(ys, vocab), logits);
  };

  const opt = tf.train.adam(lr, 0.9, 0.99, 1e-8);
  /** One training step; resolves to the loss (read back: the step is finished on the device). */
  const step = async (xs, ys) => {
    const loss = tf.tidy(() => {
      const xt = tf.tensor1d(xs, 'int32');
      const yt = tf.tensor1d(ys, 'int32');
      const { value, grads } = tf.variableGrads(() => lossOf(xt, yt), all);
      // the global norm's clip (nanoGPT's grad_clip 1.0; ours: optim.rs)
      const names = Object.keys(grads);
      // (pairwise adds, not one tf.addN of ~50 inputs: the webgpu backend's AddN takes one binding an input, more
      // than SwiftShader's storage-buffer limit, and its pipeline is invalid there)
      let parts = names.map((k) => tf.sum(tf.square(grads[k])));
      while (parts.length > 1) parts = parts.map((p, i) => (i % 2 ? null : i + 1 < parts.length ? tf.add(p, parts[i + 1]) : p)).filter(Boolean);
      const norm = tf.sqrt(parts[0]);
      const scale = tf.div(clip, tf.maximum(norm, clip));
      opt.applyGradients(Object.fromEntries(names.map((k) => [k, tf.mul(grads[k], scale)])));
      for (const w of decayed) w.assign(tf.mul(w, 1 - lr * weightDecay));
      return value;
    });
    const v = (await loss.data())[0];
    loss.dispose();
    return v;
  };

  /** A batch of random windows of `ids` (as the lab's: B rows of T + 1 characters). */
  const draw = (ids, rr) => {
    const xs = new Int32Array(B * T);
    const ys = new Int32Array(B * T);
    for (let b = 0; b < B; b++) {
      const at = Math.floor(rr.u() * (ids.length - T - 1));
      for (let t = 0; t < T; t++) {
        xs[b * T + t] = ids[at + t];
        ys[b * T + t] = ids[at + t + 1];
      }
    }
    return [xs, ys];
  };
  return { params, explicitTranspose, step, draw, rng, dispose: () => { for (const v of all) v.dispose(); mask.dispose(); opt.dispose(); } };
}

export { rng };
