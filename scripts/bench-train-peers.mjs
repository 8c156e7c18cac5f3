// The training lab's peer benchmark (issue 23 §2), as JSON: the Shakespeare preset (nanoGPT's baby GPT: 4 layers,
// 4 heads, 128 dims, context 64, batch 12, character-level on the shipped text, AdamW) trained in one headless
// Chromium by
//   page_wasm_cpu        the page's training lab on its wasm CPU path (index.html?backend=cpu, driven from its own
//                        controls: Shakespeare preset, Train, Pause/Resume); the page has one thread (no wasm
//                        threads yet), so there is no 2-thread row
//   tfjs_wasm_1thread    TensorFlow.js with its wasm backend, 1 thread (WASM_HAS_MULTITHREAD_SUPPORT off: the
//                        SIMD build), the same model (scripts/bench-train-tfjs.js) on the same batch size and text
//   tfjs_wasm_threads    (only with BENCH_ENGINES) the threaded SIMD build asked for navigator.hardwareConcurrency
//                        threads: tfjs-backend-wasm caps its XNNPACK pool at hardwareConcurrency / 2 (it assumes two
//                        hyperthreads a core), so on a 2-core machine it runs 1 thread anyway (getThreadsCount() = 1)
//   native_cpu_1thread   `tinyformer train --backend cpu --threads 1` with the flags the page shows for the run
//                        (#train-cli), on the same text: the "0.6x native" row
//   page_webgpu          the page's lab on WebGPU (index.html?backend=gpu; SwiftShader in headless Chromium here)
//   tfjs_webgpu          TensorFlow.js with its webgpu backend, in the same browser
// The CPU engines take turns: BENCH_ROUNDS (default 4) rounds of about BENCH_SECONDS (default 6) each, after a
// warm-up each, so that the load of a shared machine falls on all of them alike; then the two WebGPU engines,
// BENCH_GPU_ROUNDS (default 2) rounds of BENCH_GPU_SECONDS (default 25) each after a warm-up (BENCH_WEBGPU=0 leaves
// them out). tokens/s: the page's from the lab's own log (src/train/lab.rs: the steps' busy time, evaluations and
// the live views' probes left out, as the page shows it), and also over the wall clock of its segments; TF.js's
// from the wall clock of its steps (each step's loss read back); native's from its per-step log (step 1 left out).
// Per engine: steady tokens/s (all timed tokens / all timed seconds), the median and best segment; ratios on the
// steady figures and on the medians.
// TF.js (npm: @tensorflow/tfjs, -backend-wasm, -backend-webgpu, TFJS_VERSION, default 4.22.0) and esbuild are
// installed by this script into bench-out/tfjs (gitignored; not a dependency of the project or of CI) and bundled
// into one script for a bench-only page served by this script's own server on another port (the shipped page and
// its CSP are untouched; that page's CSP allows blob: workers, which the threaded TF.js wasm build needs). Every
// request to an origin other than the two servers is counted and fails the run.
//   node scripts/bench-train-peers.mjs       (scripts/bench-train-peers.sh builds the native binary first)
// TINYFORMER_BIN: the native binary (default $CARGO_TARGET_DIR/release/tinyformer or target/release/tinyformer);
// BENCH_ENGINES: a comma list to run only some engines.
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { execFileSync, spawn } from 'node:child_process';
import { setup, openPage, REPO } from '../tests/browser/_harness.mjs';

const env = process.env;
const rounds = Number(env.BENCH_ROUNDS ?? 4);
const seconds = Number(env.BENCH_SECONDS ?? 6);
const gpuRounds = Number(env.BENCH_GPU_ROUNDS ?? 2);
const gpuSeconds = Number(env.BENCH_GPU_SECONDS ?? 25);
const webgpu = env.BENCH_WEBGPU !== '0';
const TFJS_VERSION = env.TFJS_VERSION ?? '4.22.0';
const ESBUILD_VERSION = '0.25.12';
const DEPS = path.join(REPO, 'bench-out/tfjs');
const TOKENS = 12 * 64; // the preset's batch x context (checked against the page's plan below)
const all = ['page_wasm_cpu', 'tfjs_wasm_1thread', 'tfjs_wasm_threads', 'native_cpu_1thread', 'page_webgpu', 'tfjs_webgpu'];
const engines = new Set((env.BENCH_ENGINES ?? all.filter((e) => e !== 'tfjs_wasm_threads').join(',')).split(',')
  .filter((e) => webgpu || !e.includes('webgpu')));
const log = (...a) => console.error('[bench-train-peers]', ...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------------------------
// TF.js: installed into bench-out/tfjs at the pinned version, bundled with esbuild into one classic script
const skipped = {};
function tfjsDeps() {
  const pkgs = ['@tensorflow/tfjs', '@tensorflow/tfjs-backend-wasm', '@tensorflow/tfjs-backend-webgpu'];
  const have = (p, v) => {
    try {
      return JSON.parse(fs.readFileSync(path.join(DEPS, 'node_modules', p, 'package.json'), 'utf8')).version === v;
    } catch {
      return false;
    }
  };
  if (!pkgs.every((p) => have(p, TFJS_VERSION)) || !have('esbuild', ESBUILD_VERSION)) {
    fs.mkdirSync(DEPS, { recursive: true });
    if (!fs.existsSync(path.join(DEPS, 'package.json'))) fs.writeFileSync(path.join(DEPS, 'package.json'), '{"private": true}\n');
    log(`installing ${pkgs.join(', ')} ${TFJS_VERSION} and esbuild ${ESBUILD_VERSION} into bench-out/tfjs`);
    execFileSync('npm', ['install', '--prefix', DEPS, '--no-audit', '--no-fund', '--save-exact',
      ...pkgs.map((p) => `${p}@${TFJS_VERSION}`), `esbuild@${ESBUILD_VERSION}`], { stdio: ['ignore', 2, 2] });
  }
  fs.mkdirSync(path.join(DEPS, 'dist'), { recursive: true });
  fs.writeFileSync(path.join(DEPS, 'entry.mjs'), [
    "import * as tf from '@tensorflow/tfjs';",
    "import * as wasm from '@tensorflow/tfjs-backend-wasm';",
    "import '@tensorflow/tfjs-backend-webgpu';",
    'globalThis.tf = tf;',
    'globalThis.tfWasm = wasm;',
    '',
  ].join('\n'));
  execFileSync(path.join(DEPS, 'node_modules/.bin/esbuild'), ['entry.mjs', '--bundle', '--format=iife', '--platform=browser',
    '--minify', '--log-level=warning', '--outfile=dist/tfjs-bundle.js'], { cwd: DEPS, stdio: ['ignore', 2, 2] });
}

// The bench-only page's server: the bundle, the TF.js wasm files, the model script and the shipped text; cross-origin
// isolated (COOP/COEP: SharedArrayBuffer for the threaded wasm build), loopback only.
const WASM_DIST = path.join(DEPS, 'node_modules/@tensorflow/tfjs-backend-wasm/dist');
const FILES = {
  '/tfjs/tfjs-bundle.js': path.join(DEPS, 'dist/tfjs-bundle.js'),
  '/scripts/bench-train-tfjs.js': path.join(REPO, 'scripts/bench-train-tfjs.js'),
  '/www/data/shakespeare.txt.gz': path.join(REPO, 'www/data/shakespeare.txt.gz'),
};
for (const w of ['tfjs-backend-wasm.wasm', 'tfjs-backend-wasm-simd.wasm', 'tfjs-backend-wasm-threaded-simd.wasm']) {
  FILES[`/tfjs/${w}`] = path.join(WASM_DIST, w);
}
const PAGE = '<!doctype html><meta charset="utf-8"><title>tinyformer bench: TensorFlow.js training</title>' +
  '<script src="/tfjs/tfjs-bundle.js"></script><p>TensorFlow.js training bench (scripts/bench-train-peers.mjs)</p>\n';
function startTfjsServer() {
  const headers = {
    'Content-Security-Policy': "default-src 'self'; script-src 'self' blob: 'wasm-unsafe-eval'; worker-src 'self' blob:; " +
      "connect-src 'self'; object-src 'none'; base-uri 'none'",
    'Cross-Origin-Opener-Policy': 'same-origin',
    'Cross-Origin-Embedder-Policy': 'require-corp',
    'Cross-Origin-Resource-Policy': 'same-origin',
    'Cache-Control': 'no-cache',
  };
  const types = { '.js': 'text/javascript', '.wasm': 'application/wasm', '.gz': 'application/octet-stream' };
  const server = http.createServer((req, res) => {
    const p = new URL(req.url, 'http://localhost').pathname;
    if (p === '/') {
      res.writeHead(200, { ...headers, 'Content-Type': 'text/html; charset=utf-8' });
      return res.end(PAGE);
    }
    const file = FILES[p];
    if (!file || !fs.existsSync(file)) {
      res.writeHead(404, headers);
      return res.end('not found\n');
    }
    res.writeHead(200, { ...headers, 'Content-Type': types[path.extname(file)] ?? 'application/octet-stream' });
    fs.createReadStream(file).pipe(res);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({
    url: `http://127.0.0.1:${server.address().port}/`,
    close: () => new Promise((done) => { server.close(() => done()); server.closeAllConnections?.(); }),
  })));
}

// ---------------------------------------------------------------------------------------------------------------
// Our page's lab: every step log the worker sends (window.__trainLogs), tapped from the page's own Worker
const tapWorker = () => {
  window.__trainLogs = [];
  const W = window.Worker;
  window.Worker = class extends W {
    constructor(...a) {
      super(...a);
      this.addEventListener('message', (e) => {
        const ev = e.data?.event;
        if (ev?.kind === 'steps') for (const l of ev.logs ?? []) window.__trainLogs.push(l);
      });
    }
  };
};

async function labEngine(browserEnv, backend) {
  const { page, context, log: pageLog } = await openPage(browserEnv, `index.html?nomodel=1&backend=${backend}`, { initScript: tapWorker });
  await page.waitForSelector('#train-memory[data-total]:not([data-total=""])', { timeout: 120_000 });
  await page.selectOption('#train-preset', 'shakespeare');
  await page.waitForFunction(() => document.querySelector('#train-cli')?.textContent.includes('--arch gpt'), null, { timeout: 60_000 });
  // a run that does not end during the bench (the cosine schedule only changes the lr's value)
  await page.fill('#train-steps', '100000');
  await page.waitForFunction(() => document.querySelector('#train-cli')?.textContent.includes('--steps 100000'), null, { timeout: 60_000 });
  const plan = await page.evaluate(() => ({
    cli: document.querySelector('#train-cli').textContent,
    params: Number(document.querySelector('#train-memory').textContent.match(/^([\d,]+) parameters/)?.[1].replace(/,/g, '')),
    batch: Number(document.querySelector('#train-batch')?.value),
    context: Number(document.querySelector('#train-context')?.value),
  }));
  const state = () => page.evaluate(() => document.querySelector('#train-status').dataset.state);
  const logs = () => page.evaluate(() => window.__trainLogs.slice());
  let started = false;
  // runs for about `s` seconds (at least until `minSteps` more steps are logged), then pauses; returns the
  // segment's steps and seconds, both the lab's busy time and the wall clock
  const segment = async (s, minSteps = 1) => {
    const before = await logs();
    const last0 = before.at(-1);
    const t0 = Date.now();
    if (!started) {
      await page.click('#train-start');
      started = true;
    } else {
      await page.click('#train-pause'); // Resume
    }
    await page.waitForFunction(() => document.querySelector('#train-status').dataset.state === 'running', null, { timeout: 60_000 });
    await sleep(s * 1000);
    await page.waitForFunction(({ n, from }) => (window.__trainLogs.at(-1)?.step ?? 0) >= from + n || document.querySelector('#train-status').dataset.state === 'error',
      { n: minSteps, from: last0?.step ?? 0 }, { timeout: 600_000, polling: 50 });
    await page.click('#train-pause');
    await page.waitForFunction(() => ['paused', 'error', 'done'].includes(document.querySelector('#train-status').dataset.state), null, { timeout: 600_000 });
    const wall = (Date.now() - t0) / 1000;
    if ((await state()) !== 'paused') throw new Error(`the lab stopped: ${await page.evaluate(() => document.querySelector('#train-error')?.textContent ?? '')}`);
    const after = await logs();
    const last = after.at(-1);
    const steps = last.step - (last0?.step ?? 0);
    const busy = last.elapsed_s - (last0?.elapsed_s ?? 0);
    return { steps, seconds: busy, wall_seconds: wall, first_loss: after[0]?.loss, loss: last.loss, step: last.step };
  };
  const backendUsed = () => page.evaluate(() => document.querySelector('#train-status').dataset.backend);
  return { page, context, pageLog, plan, segment, backendUsed };
}

// TF.js in the bench page: one page per backend setting, the model built once and stepped on demand
async function tfjsEngine(browser, url, backend, threads) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const origin = new URL(url).origin;
  const foreign = [];
  const errors = [];
  page.on('request', (req) => {
    const u = req.url();
    if (!u.startsWith('data:') && !u.startsWith('blob:') && new URL(u).origin !== origin) foreign.push(u);
  });
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(url);
  const info = await page.evaluate(async ({ backend, threads }) => {
    const tf = globalThis.tf;
    if (backend === 'wasm') {
      if (threads === 1) tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', false);
      else globalThis.tfWasm.setThreadsCount(navigator.hardwareConcurrency);
      globalThis.tfWasm.setWasmPaths('/tfjs/');
    }
    if (backend === 'webgpu' && !navigator.gpu) throw new Error('navigator.gpu is undefined');
    if (!(await tf.setBackend(backend))) throw new Error(`tf.setBackend('${backend}') failed`);
    await tf.ready();
    const { createGpt, charData } = await import('/scripts/bench-train-tfjs.js');
    const gz = await fetch('/www/data/shakespeare.txt.gz');
    const text = await new Response(gz.body.pipeThrough(new DecompressionStream('gzip'))).text();
    const data = charData(text);
    const model = createGpt(tf, { vocab: data.vocab });
    const r = model.rng(1);
    globalThis.__bench = { tf, model, data, r, steps: 0, losses: [] };
    const out = { backend: tf.getBackend(), vocab: data.vocab, params: model.params, explicit_transpose: model.explicitTranspose };
    if (backend === 'wasm') {
      out.threads = globalThis.tfWasm.getThreadsCount();
      out.simd = await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT');
      out.multithread_build = await tf.env().getAsync('WASM_HAS_MULTITHREAD_SUPPORT');
    }
    if (backend === 'webgpu') {
      const a = tf.backend().adapterInfo;
      out.adapter = a ? { vendor: a.vendor, architecture: a.architecture } : null;
    }
    out.cross_origin_isolated = crossOriginIsolated;
    return out;
  }, { backend, threads });
  // steps for about `s` seconds (at least `minSteps`); every step's loss is read back (the step is done)
  const segment = (s, minSteps = 1) => page.evaluate(async ({ s, minSteps }) => {
    const b = globalThis.__bench;
    const t0 = performance.now();
    let steps = 0;
    let loss;
    do {
      const [xs, ys] = b.model.draw(b.data.ids, b.r);
      loss = await b.model.step(xs, ys);
      b.steps++;
      if (b.steps === 1) b.firstLoss = loss;
      steps++;
    } while (steps < minSteps || performance.now() - t0 < s * 1000);
    const sec = (performance.now() - t0) / 1000;
    return { steps, seconds: sec, wall_seconds: sec, first_loss: b.firstLoss, loss, step: b.steps, tensors: b.tf.memory().numTensors };
  }, { s, minSteps });
  return { page, context, info, segment, foreign, errors };
}

// Native: one `tinyformer train` process a segment, the page's flags (#train-cli) on the same text
function nativeEngine(bin, cli, textFile, tmp) {
  const args = cli.trim().split(/\s+/).slice(1); // without 'tinyformer'
  const i = args.indexOf('--text');
  if (i < 0) throw new Error(`no --text in the page's command: ${cli}`);
  args[i + 1] = textFile;
  const si = args.indexOf('--steps');
  let n = 0;
  let rate = null;
  const segment = async (s) => {
    const steps = rate ? Math.max(20, Math.round((rate * s) / TOKENS)) : 60;
    const a = [...args];
    a[si + 1] = String(steps + 1);
    const file = path.join(tmp, `native-${n++}.jsonl`);
    a.push('--backend', 'cpu', '--threads', '1', '--log', file, '--log-every', '1');
    const t0 = Date.now();
    await new Promise((resolve, reject) => {
      const p = spawn(bin, a, { stdio: ['ignore', 'ignore', 'pipe'] });
      let err = '';
      p.stderr.on('data', (d) => { err += d; });
      p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${bin} ${a.join(' ')}: exit ${code}: ${err.trim().split('\n').at(-1)}`))));
    });
    const wall = (Date.now() - t0) / 1000;
    const rows = fs.readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    const later = rows.filter((r) => r.step > 1);
    const sec = later.reduce((t, r) => t + TOKENS / r.tokens_per_second, 0);
    rate = (later.length * TOKENS) / sec;
    return { steps: later.length, seconds: sec, wall_seconds: wall, first_loss: rows[0].loss, loss: rows.at(-1).loss, step: rows.at(-1).step };
  };
  return { segment, args: [...args, '--backend', 'cpu', '--threads', '1'] };
}

// ---------------------------------------------------------------------------------------------------------------
const summary = (segs, warm) => {
  const rates = segs.map((x) => (x.steps * TOKENS) / x.seconds);
  const sorted = [...rates].sort((a, b) => a - b);
  const steps = segs.reduce((t, x) => t + x.steps, 0);
  const out = {
    steady_tokens_per_second: (steps * TOKENS) / segs.reduce((t, x) => t + x.seconds, 0),
    median_segment_tokens_per_second: sorted.length % 2 ? sorted[(sorted.length - 1) / 2] : (sorted[sorted.length / 2 - 1] + sorted[sorted.length / 2]) / 2,
    best_segment_tokens_per_second: sorted.at(-1),
    segment_tokens_per_second: rates.map((x) => Math.round(x)),
    wall_tokens_per_second: (steps * TOKENS) / segs.reduce((t, x) => t + x.wall_seconds, 0),
    timed_steps: steps,
    loss_first_step: warm?.first_loss,
    loss_last: segs.at(-1)?.loss,
    steps_taken: segs.at(-1)?.step,
  };
  return out;
};

const cpuModel = (fs.readFileSync('/proc/cpuinfo', 'utf8').match(/model name\s*:\s*(.*)/) ?? [])[1] ?? os.cpus()[0]?.model;
const out = {
  bench: 'train_peers', date: new Date().toISOString(), cpu: cpuModel, cores: os.cpus().length,
  load_average_before: os.loadavg().map((x) => Number(x.toFixed(2))),
  workload: 'the lab\'s Shakespeare preset: nanoGPT baby GPT (4 layers, 4 heads, d 128, ff 512, T 64, B 12), character-level on www/data/shakespeare.txt.gz, AdamW, clip 1.0',
  rounds, seconds, gpu_rounds: gpuRounds, gpu_seconds: gpuSeconds,
};
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-train-peers-'));
let failed = false;
const browserEnv = await setup({ webgpu: true });
let tfjsSrv = null;
const results = {};
try {
  out.chromium = browserEnv.browser.version();
  const want = (e) => engines.has(e);
  if ([...engines].some((e) => e.startsWith('tfjs'))) {
    try {
      tfjsDeps();
      tfjsSrv = await startTfjsServer();
      out.tfjs_versions = Object.fromEntries(['tfjs', 'tfjs-backend-wasm', 'tfjs-backend-webgpu'].map((p) => [p,
        JSON.parse(fs.readFileSync(path.join(DEPS, 'node_modules/@tensorflow', p, 'package.json'), 'utf8')).version]));
    } catch (e) {
      for (const x of all.filter((x) => x.startsWith('tfjs'))) skipped[x] = `TF.js could not be installed or bundled: ${e.message}`;
    }
  }
  const bin = env.TINYFORMER_BIN ?? path.join(env.CARGO_TARGET_DIR ?? path.join(REPO, 'target'), 'release/tinyformer');
  if (want('native_cpu_1thread') && !fs.existsSync(bin)) skipped.native_cpu_1thread = `no native binary at ${bin} (cargo build --release)`;
  const textFile = path.join(tmp, 'shakespeare.txt');
  fs.writeFileSync(textFile, zlib.gunzipSync(fs.readFileSync(path.join(REPO, 'www/data/shakespeare.txt.gz'))));

  // --- the CPU engines, interleaved
  const cpu = {};
  if (want('page_wasm_cpu')) cpu.page_wasm_cpu = await labEngine(browserEnv, 'cpu');
  const plan = cpu.page_wasm_cpu?.plan;
  if (plan) {
    out.page_plan = plan;
    if (plan.batch * plan.context !== TOKENS) throw new Error(`the preset is not batch 12 x context 64: ${plan.batch} x ${plan.context}`);
  }
  for (const [name, threads] of [['tfjs_wasm_1thread', 1], ['tfjs_wasm_threads', 0]]) {
    if (!want(name) || skipped[name]) continue;
    try {
      cpu[name] = await tfjsEngine(browserEnv.browser, tfjsSrv.url, 'wasm', threads);
    } catch (e) {
      skipped[name] = `failed to start: ${e.message}`;
    }
  }
  if (want('native_cpu_1thread') && !skipped.native_cpu_1thread) {
    if (!plan) skipped.native_cpu_1thread = 'needs page_wasm_cpu (the page\'s flags for the run)';
    else cpu.native_cpu_1thread = nativeEngine(bin, plan.cli, textFile, tmp);
  }
  const segs = Object.fromEntries(Object.keys(cpu).map((k) => [k, []]));
  const warm = {};
  log(`CPU engines: ${Object.keys(cpu).join(', ')}; warm-up, then ${rounds} rounds of ~${seconds} s`);
  for (const [k, e] of Object.entries(cpu)) warm[k] = await e.segment(k.startsWith('tfjs') ? 2 : 3, k === 'page_wasm_cpu' ? 20 : 3);
  for (let r = 0; r < rounds; r++) {
    for (const [k, e] of Object.entries(cpu)) {
      segs[k].push(await e.segment(seconds));
      log(`round ${r + 1} ${k}: ${Math.round((segs[k].at(-1).steps * TOKENS) / segs[k].at(-1).seconds)} tok/s`);
    }
  }
  for (const k of Object.keys(cpu)) results[k] = summary(segs[k], warm[k]);
  if (cpu.page_wasm_cpu) {
    results.page_wasm_cpu.backend = await cpu.page_wasm_cpu.backendUsed();
    results.page_wasm_cpu.params = plan.params;
    results.page_wasm_cpu.isa = await cpu.page_wasm_cpu.page.evaluate(() => document.querySelector('#core-build')?.textContent ?? null).catch(() => null);
    results.page_wasm_cpu.threads = 1;
  }
  for (const k of ['tfjs_wasm_1thread', 'tfjs_wasm_threads']) if (cpu[k]) Object.assign(results[k], cpu[k].info);
  if (cpu.native_cpu_1thread) {
    const n = results.native_cpu_1thread;
    n.command = `tinyformer ${cpu.native_cpu_1thread.args.join(' ')}`.replace(textFile, 'shakespeare.txt');
    // each segment is a fresh process from step 1 (its first step left out): steps_taken is the last one's
    n.process_per_segment = true;
  }

  // --- WebGPU: ours, then TF.js's, taking turns
  const gpu = {};
  if (want('page_webgpu')) {
    try {
      gpu.page_webgpu = await labEngine(browserEnv, 'gpu');
    } catch (e) {
      skipped.page_webgpu = `failed to start: ${e.message}`;
    }
  }
  if (want('tfjs_webgpu') && !skipped.tfjs_webgpu) {
    try {
      gpu.tfjs_webgpu = await tfjsEngine(browserEnv.browser, tfjsSrv.url, 'webgpu', 0);
    } catch (e) {
      skipped.tfjs_webgpu = `failed to start: ${e.message}`;
    }
  }
  const gsegs = Object.fromEntries(Object.keys(gpu).map((k) => [k, []]));
  if (Object.keys(gpu).length) log(`WebGPU engines: ${Object.keys(gpu).join(', ')}; warm-up, then ${gpuRounds} rounds of ~${gpuSeconds} s`);
  for (const [k, e] of Object.entries(gpu)) {
    try {
      warm[k] = await e.segment(0, 2);
    } catch (err) {
      skipped[k] = `failed in its warm-up: ${err.message}`;
      delete gpu[k];
    }
  }
  for (let r = 0; r < gpuRounds; r++) {
    for (const [k, e] of Object.entries(gpu)) {
      gsegs[k].push(await e.segment(gpuSeconds, 1));
      log(`round ${r + 1} ${k}: ${Math.round((gsegs[k].at(-1).steps * TOKENS) / gsegs[k].at(-1).seconds)} tok/s`);
    }
  }
  for (const k of Object.keys(gpu)) results[k] = summary(gsegs[k], warm[k]);
  if (gpu.page_webgpu) {
    results.page_webgpu.backend = await gpu.page_webgpu.backendUsed();
    results.page_webgpu.params = gpu.page_webgpu.plan.params;
  }
  if (gpu.tfjs_webgpu) Object.assign(results.tfjs_webgpu, gpu.tfjs_webgpu.info);

  // --- checks and ratios
  const foreign = [];
  const pageErrors = [];
  for (const e of [...Object.values(cpu), ...Object.values(gpu)]) {
    if (e.pageLog) {
      foreign.push(...e.pageLog.foreignRequests);
      pageErrors.push(...e.pageLog.pageErrors);
    }
    if (e.foreign) {
      foreign.push(...e.foreign);
      pageErrors.push(...e.errors);
    }
  }
  out.foreign_requests = foreign;
  out.page_errors = pageErrors;
  if (foreign.length) failed = true;
  const ratio = (a, b) => {
    const x = results[a];
    const y = results[b];
    if (!x || !y) return undefined;
    return { steady: x.steady_tokens_per_second / y.steady_tokens_per_second, median_segment: x.median_segment_tokens_per_second / y.median_segment_tokens_per_second };
  };
  out.ratios = Object.fromEntries(Object.entries({
    page_wasm_cpu_over_tfjs_wasm_1thread: ratio('page_wasm_cpu', 'tfjs_wasm_1thread'),
    page_wasm_cpu_over_tfjs_wasm_threads: ratio('page_wasm_cpu', 'tfjs_wasm_threads'),
    page_wasm_cpu_over_native_cpu_1thread: ratio('page_wasm_cpu', 'native_cpu_1thread'),
    page_webgpu_over_tfjs_webgpu: ratio('page_webgpu', 'tfjs_webgpu'),
    page_wasm_cpu_over_page_webgpu: ratio('page_wasm_cpu', 'page_webgpu'),
  }).filter(([, v]) => v));
  const goal = (r, min) => (r ? { ratio_steady: Number(r.steady.toFixed(3)), ratio_median: Number(r.median_segment.toFixed(3)), at_least: min, met: r.steady >= min && r.median_segment >= min } : 'not measured');
  out.goals = {
    page_wasm_cpu_vs_tfjs_wasm: goal(out.ratios.page_wasm_cpu_over_tfjs_wasm_1thread, 2),
    page_wasm_cpu_vs_native_1thread: goal(out.ratios.page_wasm_cpu_over_native_cpu_1thread, 0.6),
    page_webgpu_vs_tfjs_webgpu: goal(out.ratios.page_webgpu_over_tfjs_webgpu, 2),
  };
  // the same model: parameter counts and the vocabulary (TF.js's from the text; ours from the page's plan)
  const params = Object.fromEntries(Object.entries(results).filter(([, v]) => v.params).map(([k, v]) => [k, v.params]));
  out.same_parameter_count = new Set(Object.values(params)).size <= 1;
  if (!out.same_parameter_count) failed = true;
  for (const [k, v] of Object.entries(results)) {
    if (!k.startsWith('tfjs')) continue;
    // a fresh model's loss is about ln(vocab), and it falls
    v.ln_vocab = Math.log(v.vocab);
    v.loss_falls = v.loss_last < v.loss_first_step;
  }
} catch (e) {
  out.error = String(e?.stack ?? e);
  failed = true;
} finally {
  out.load_average_after = os.loadavg().map((x) => Number(x.toFixed(2)));
  out.engines = results;
  out.skipped = skipped;
  await browserEnv.close();
  await tfjsSrv?.close();
  fs.rmSync(tmp, { recursive: true, force: true });
}
console.log(JSON.stringify(out, null, 1));
process.exit(failed ? 1 : 0);
