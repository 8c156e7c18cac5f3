// The compute worker: loads the wasm core (www/pkg or www/pkg-relaxed, built by scripts/build-wasm.sh) and answers requests
// from app.js, so the page never blocks on the GPU or on the core. Its actions, their requests, results and events,
// and the messages around them are declared in www/protocol.js; at startup this script checks that its handlers
// answer exactly those actions.
//
// Every call that touches the loaded model goes through one queue, because the core answers "busy" to a
// call that arrives while another holds the model. 'stop' is not queued: it sets a flag that the generation
// loop checks between two gen_next() calls, then the loop calls gen_stop().
//
// Test hook: the worker URL flag `?nogpu=1` (app.js passes on the page's own `?nogpu=1`) removes
// navigator.gpu in this worker before the core looks for it, so tests can check the "WebGPU not available"
// path on a browser that has WebGPU. It only ever disables things. The 'hangNext', 'loseDevice' and 'crash'
// actions are test hooks too (protocol.js): they only ever break things on request.
//
// The BPE workbench's inputs are bounded here too (BPE_LIMITS, the same as the core's), so that a huge paste
// is refused before it is copied into wasm memory.
//
// A Rust panic prints "panicked at ..." through console_error_panic_hook; the worker remembers that text so the
// page can say what happened. Panics inside async core calls escape as uncaught errors: the worker reports them
// as {type: 'fatal', error} and app.js restarts it.
import { protocolMismatch } from './protocol.js';

// Two builds of the core (scripts/build-wasm.sh): www/pkg-relaxed uses relaxed SIMD (f32x4.relaxed_madd, a
// fused multiply-add where the CPU has one: the CPU path's GEMM 1.2-1.6x faster), www/pkg plain simd128. A
// browser without relaxed SIMD rejects the whole relaxed module, so this probe (a function doing one
// relaxed_madd) decides.
const RELAXED_SIMD_PROBE = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 8, 1, 96, 3, 123, 123, 123, 1, 123, 3, 2, 1, 0,
  10, 13, 1, 11, 0, 32, 0, 32, 1, 32, 2, 253, 133, 2, 11]);
const PLAIN_URL = new URL('./pkg/tinyformer.js', import.meta.url);
const RELAXED_URL = new URL('./pkg-relaxed/tinyformer.js', import.meta.url);
let lastPanic = '';  // last panic message seen on console.error

const consoleError = console.error.bind(console);
console.error = (...args) => {
  const text = args.map(String).join(' ');
  if (text.includes('panicked at')) lastPanic = text.split('\n\nStack:')[0].trim();
  consoleError(...args);
};

const params = new URL(self.location.href).searchParams;
const relaxedSimd = (() => {
  try { return WebAssembly.validate(RELAXED_SIMD_PROBE); } catch { return false; }
})();
if (params.get('nogpu') === '1') {
  for (const target of [self.WorkerNavigator?.prototype, self.navigator]) {
    try {
      if (target) Object.defineProperty(target, 'gpu', { value: undefined, configurable: true });
    } catch { /* not configurable: nothing more we can do */ }
  }
}

let ready = null; // Promise of the loaded core, shared by every request

function loadCore() {
  ready ??= (async () => {
    let mod;
    let url = relaxedSimd ? RELAXED_URL : PLAIN_URL;
    try {
      mod = await import(url.href).catch((err) => {
        if (url === PLAIN_URL) throw err;
        url = PLAIN_URL; // no relaxed build here: the plain one
        return import(url.href);
      });
    } catch (err) {
      throw new Error(`could not load the wasm core (${url.pathname}): ${describe(err)}. ` +
        'Build it with scripts/build-wasm.sh.');
    }
    await mod.default(); // fetches and instantiates tinyformer_bg.wasm; the core's start() sets the panic hook
    return mod;
  })();
  ready.catch(() => { ready = null; }); // a failed load may be retried by the next request
  return ready;
}

// Each handler returns a structured-cloneable result or throws.
const handlers = {
  async init() {
    const core = await loadCore();
    const hasNavigatorGpu = typeof self.navigator !== 'undefined' && self.navigator.gpu != null;
    // ?maxbinding=BYTES (a test hook, honoured only below the adapter's own limit): the core splits large
    // embeddings and heads into bindings of at most that size, as it does on a device whose limit is that low
    const maxBinding = Number(params.get('maxbinding')) || 0;
    const gpu = await core.gpu_init(maxBinding > 0 ? maxBinding : undefined);
    const browserAdapter = gpu?.ok ? await browserAdapterInfo() : null;
    // The core chooses the GPU kernels for the adapter (gpu::KernelPolicy); it only lacks the architecture
    // (wgpu's WebGPU backend leaves it empty), so the page passes that fact on, and nothing more.
    if (gpu?.ok && browserAdapter?.architecture) core.gpu_note_architecture(browserAdapter.architecture);
    // isa: the build's CPU kernels, "simd128+relaxed-simd" or "simd128"
    return { version: core.version(), isa: core.cpu_isa(), gpu, hasNavigatorGpu, browserAdapter };
  },
  async masks({ seq_len, num_pad, cached_len }) {
    const core = await loadCore();
    const m = core.masks(seq_len, num_pad, cached_len);
    // Cross-attention: a decoder of seq_len positions over this padded sequence as the source.
    m.cross = core.cross_mask(seq_len, seq_len, num_pad);
    return m;
  },
  async bpe({ text, vocab_size, sentence }) {
    checkBpeInputs(String(text ?? ''), String(sentence ?? ''));
    const core = await loadCore();
    return core.bpe_workbench(text, vocab_size, sentence);
  },
  async hangNext({ action }) {
    hangOn = String(action);
    return true;
  },
  // The flag is cleared when the next 'generate' request arrives.
  async stop() {
    stopRequested = true;
    return { stopping: generating };
  },
  async trainPlan({ spec, text }) {
    const core = await loadCore();
    return core.train_plan(spec, text ?? undefined);
  },
  // Flags read by the running trainRun between two chunks (a flag set while none runs would stop the next one).
  async trainPause() {
    if (trainActive > 0) trainFlag ??= 'pause';
    return { pausing: trainActive > 0 };
  },
  async trainStop() {
    if (trainActive > 0) trainFlag = 'stop';
    return { stopping: trainActive > 0 };
  },
  // Not queued, so a running trainRun's next probe takes it.
  async trainSampleTemp({ temperature }) {
    sampleTemperature = checkSampleTemp(temperature);
    return { temperature: sampleTemperature, running: trainActive > 0 };
  },
  async loseDevice() {
    const core = await loadCore();
    core.debug_lose_device();
    return true;
  },
  async crash({ mode = 'panic' } = {}) {
    if (mode === 'error') {
      setTimeout(() => { throw new Error('worker crashed on purpose (test hook)'); });
      return new Promise(() => {}); // never answers: the error event is what app.js sees
    }
    // A real Rust panic: console_error_panic_hook logs it, then the wasm traps with `unreachable`.
    const core = await loadCore();
    core.debug_panic('test hook');
    throw new Error('debug_panic returned');
  },
};

// The core's limits for bpe_workbench (src/tokenizer/workbench.rs): training text in UTF-8 bytes, sentence in characters.
const BPE_LIMITS = { textBytes: 1 << 20, sentenceChars: 200 };

function checkBpeInputs(text, sentence) {
  // UTF-8 never has fewer bytes than UTF-16 code units, so a long string is refused before it is encoded.
  const mb = BPE_LIMITS.textBytes / (1 << 20);
  if (text.length > BPE_LIMITS.textBytes || new TextEncoder().encode(text).length > BPE_LIMITS.textBytes) {
    throw new Error(`the training text is limited to ${mb} MB in the page`);
  }
  if (sentence.length > 2 * BPE_LIMITS.sentenceChars || [...sentence].length > BPE_LIMITS.sentenceChars) {
    throw new Error(`the sentence is limited to ${BPE_LIMITS.sentenceChars} characters`);
  }
}

let hangOn = null; // the 'hangNext' test hook (www/protocol.js)

// Model calls: one at a time, in arrival order (www/protocol.js, queued).
let generating = false;
// The loaded model runs on WebGPU: generation chains K tokens per submission there (see generate).
let modelOnGpu = false;
const BATCH_BUDGET_MS = 50;
// Generated tokens go to the page at most once per frame (generate): one message per token flooded the main
// thread once the CPU path streamed ~1,400 tok/s.
const TOKEN_FLUSH_MS = 16;
const MAX_TOKENS_PER_SUBMIT = 16;
// The training lab: a chunk of steps takes about this long, so Pause and Stop wait at most about that.
const TRAIN_CHUNK_MS = 150;
// The live views' share of a run: trainRun skips a due probe while the probes so far took more than this
// fraction of the time spent in steps (issue 23: the views cost at most 5% of training throughput).
const VIEW_BUDGET = 0.04;
let trainActive = 0;    // trainRun calls queued or running
let trainFlag = null;   // 'pause' | 'stop': read by the running trainRun between two chunks
let stopRequested = false;
// The temperature of the lab's probe sample (0 = greedy): set by trainRun, trainSampleTemp and trainProbe, read at
// each probe. The core seeds the sample with the step, so a step and a temperature give one sample.
const MAX_SAMPLE_TEMP = 2;
let sampleTemperature = 0;
function checkSampleTemp(t) {
  const x = Number(t ?? 0);
  if (!Number.isFinite(x) || x < 0 || x > MAX_SAMPLE_TEMP) throw new Error(`the sample's temperature must be a number from 0 to ${MAX_SAMPLE_TEMP}, got ${t}`);
  return x;
}

const modelHandlers = {
  // Queued too: the self-test and the model share the GPU device.
  async trainStart({ spec, text, gpu }) {
    const core = await loadCore();
    return await core.train_start(spec, text ?? undefined, Boolean(gpu));
  },
  // Chunks of steps sized to take about TRAIN_CHUNK_MS each (the first one step), so that a pause or a stop is
  // answered within one chunk; each chunk's last step is read back, which bounds how far the GPU runs behind.
  async trainResume({ spec, text, gpu, snapshot }) {
    const core = await loadCore();
    const plan = await core.train_resume(spec, text ?? undefined, Boolean(gpu), new Uint8Array(snapshot));
    return { ...plan, log: core.train_log() };
  },
  async trainRun({ every = 10, inductionEvery = 0, prompt = null, snapshotMs = 0, temperature } = {}, emit) {
    const core = await loadCore();
    if (temperature != null) sampleTemperature = checkSampleTemp(temperature);
    let k = 1;
    let step = null;
    let trainMs = 0;
    let probeMs = 0;
    let savedAt = performance.now();
    let savedStep = null;
    const snapshot = async () => {
      if (!snapshotMs || step === null || step === savedStep) return;
      const b = await core.train_snapshot();
      emit({ kind: 'snapshot', step, bytes: b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) });
      savedAt = performance.now();
      savedStep = step;
    };
    // the probe (train::lab::probe): the induction scores at the top level, as before, and the rest in `probe`
    const induction = async (s) => {
      const probe = await core.train_probe(prompt ?? undefined, sampleTemperature);
      return { step: s, ...(probe.induction ?? {}), probe };
    };
    for (;;) {
      if (trainFlag) {
        await snapshot();
        return { state: trainFlag === 'stop' ? 'stopped' : 'paused', step };
      }
      let first = null;
      if (step === null && inductionEvery > 0) {
        // the score before this chunk, when the run starts from step 0
        const c0 = await core.train_run(0, every);
        step = c0.step;
        if (step === 0) {
          const tp = performance.now();
          first = await induction(0);
          probeMs += performance.now() - tp;
        }
      }
      let n = k;
      if (inductionEvery > 0 && step !== null) n = Math.max(1, Math.min(n, inductionEvery - (step % inductionEvery)));
      const t0 = performance.now();
      const chunk = await core.train_run(n, every);
      const chunkMs = performance.now() - t0;
      step = chunk.step;
      const ev = { kind: 'steps', step, done: chunk.done, chunkSteps: n, chunkMs, logs: chunk.logs };
      if (first) ev.inductionStart = first;
      trainMs += chunkMs;
      // a probe every `inductionEvery` steps while the probes stay within VIEW_BUDGET of the training time (the
      // last step is always probed)
      if (inductionEvery > 0 && (step % inductionEvery === 0 || chunk.done) && (chunk.done || probeMs <= VIEW_BUDGET * trainMs)) {
        const tp = performance.now();
        ev.induction = await induction(step);
        probeMs += performance.now() - tp;
      }
      emit(ev);
      if (chunk.done || (snapshotMs && performance.now() - savedAt >= snapshotMs)) await snapshot();
      if (chunk.done) return { state: 'done', step };
      k = Math.max(1, Math.min(256, Math.round(n * Math.min(2, TRAIN_CHUNK_MS / Math.max(chunkMs, 1)))));
      await nextTask(); // let trainPause / trainStop in
    }
  },
  // The current model probed at once (paused or done), its sample at `temperature`.
  async trainProbe({ prompt = null, temperature }) {
    const core = await loadCore();
    if (temperature != null) sampleTemperature = checkSampleTemp(temperature);
    const probe = await core.train_probe(prompt ?? undefined, sampleTemperature);
    return { ...(probe.induction ?? {}), probe };
  },
  async trainSetLr({ lr }) {
    return (await loadCore()).train_set_lr(Number(lr));
  },
  async trainModel() {
    const bytes = await (await loadCore()).train_checkpoint();
    return { bytes: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) };
  },
  async trainEnd() {
    (await loadCore()).train_end();
    return true;
  },
  async selftest() {
    const core = await loadCore();
    return await core.run_selftest();
  },
  // bytes: ArrayBuffer of a .safetensors file; or files: File objects given together (a Hugging Face
  // directory's files, llama2.c's model.bin + tokenizer.bin), which the core reads in slices through
  // readFileRange, streaming {kind: 'progress', read, total} events (bytes). On an error the previous model stays
  // loaded (the core keeps it).
  async load({ bytes, files, preferGpu }, emit) {
    const core = await loadCore();
    let card;
    if (files) {
      const reader = fileReader(files, emit);
      try {
        card = await core.load_files(files.map((f) => f.name), files.map((f) => f.size), reader.read, Boolean(preferGpu));
      } finally {
        reader.flush();
      }
    } else {
      card = await core.load_model(new Uint8Array(bytes), Boolean(preferGpu));
    }
    modelOnGpu = card?.backend === 'gpu';
    if (modelOnGpu) card.gpu_kernels = core.gpu_kernels(); // the core's choice for this adapter, on the model card
    return card;
  },
  async describe() {
    return (await loadCore()).describe();
  },
  async gpuKernels() {
    return (await loadCore()).gpu_kernels();
  },
  async tokenize({ text }) {
    return (await loadCore()).tokenize(text);
  },
  async prompt({ text }) {
    return (await loadCore()).prompt(text);
  },
  async window({ src, gen }) {
    return (await loadCore()).window(Uint32Array.from(src), Uint32Array.from(gen ?? []));
  },
  async candidates({ logits, opts, n }) {
    return (await loadCore()).candidates(Float32Array.from(logits), opts, n);
  },
  async decode({ ids }) {
    return (await loadCore()).decode(Uint32Array.from(ids));
  },
  async token_strings({ ids }) {
    return (await loadCore()).token_strings(Uint32Array.from(ids));
  },
  async inspect({ ids, tgt, opts }) {
    const core = await loadCore();
    return await core.inspect(Uint32Array.from(ids), tgt ? Uint32Array.from(tgt) : undefined, opts ?? {});
  },
  async generate_ablated({ ids, opts }) {
    return await (await loadCore()).generate_ablated(Uint32Array.from(ids), opts ?? {});
  },
  async forward({ ids, tgt, layers }) {
    const core = await loadCore();
    return await core.forward(Uint32Array.from(ids), tgt ? Uint32Array.from(tgt) : undefined, layers ? Uint32Array.from(layers) : undefined);
  },
  // Tokens are coalesced to at most one 'tokens' event per TOKEN_FLUSH_MS (the first token at once), so the page
  // gets ~60 messages a second whatever the tok/s; the tokens still pending are posted before the answer.
  async generate({ ids, opts }, emit) {
    const core = await loadCore();
    if (stopRequested) return { stopped: true, steps: 0, text: '', tokenMessages: 0 }; // Stop came while this waited in the queue
    generating = true;
    let pending = [];
    let tokenMessages = 0;
    let lastFlush = -Infinity;
    const flush = () => {
      if (!pending.length) return;
      emit({ kind: 'tokens', steps: pending });
      pending = [];
      tokenMessages++;
      lastFlush = performance.now();
    };
    const done = (result) => {
      flush();
      return { ...result, tokenMessages };
    };
    try {
      // Tokens chained on the GPU (issue 12.4): K steps per submission, K grown while a batch takes under
      // half the frame budget and halved past it, so tokens still stream smoothly (they arrive K at a time).
      let k = modelOnGpu ? 2 : 1;
      const start = core.gen_start(Uint32Array.from(ids), modelOnGpu ? { ...opts, tokens_per_submit: k } : opts);
      emit({ kind: 'start', ids: Array.from(start ?? []) });
      let steps = 0;
      let left = 0; // tokens of the current batch still to come
      let tokensPerSubmit = 1; // the largest batch used, reported to the page
      for (;;) {
        if (stopRequested) {
          core.gen_stop();
          return done({ stopped: true, steps, text: '', tokensPerSubmit });
        }
        const t0 = performance.now();
        const step = await core.gen_next();
        const ms = performance.now() - t0;
        if (step == null) return done({ stopped: false, steps, text: '', tokensPerSubmit });
        if (step.id === undefined) return done({ stopped: false, steps, text: step.text ?? '', reason: step.reason ?? null, tokensPerSubmit });
        if (left === 0) { // this call waited for a batch (the first one holds the prompt's pass: not timed)
          left = step.batch ?? 1;
          tokensPerSubmit = Math.max(tokensPerSubmit, left);
          const next = ms < BATCH_BUDGET_MS / 2 ? Math.min(2 * k, MAX_TOKENS_PER_SUBMIT) : ms > BATCH_BUDGET_MS ? Math.max(1, k >> 1) : k;
          if (modelOnGpu && step.step > 0 && next !== k) {
            k = next;
            core.gen_tokens_per_submit(k);
          }
        }
        left--;
        steps++;
        pending.push(step);
        if (performance.now() - lastFlush >= TOKEN_FLUSH_MS) flush();
        await nextTask(); // let a 'stop' message in between two tokens
      }
    } finally {
      flush(); // an error too: the tokens made before it reach the page first
      generating = false;
    }
  },
  // Generates `tokens` tokens with `opts` on the loaded model and times the decoding here, next to the core.
  async probe({ ids, opts, tokens }) {
    const core = await loadCore();
    const t0 = performance.now();
    core.gen_start(Uint32Array.from(ids), { ...opts, max_new_tokens: tokens });
    let n = 0;
    let tFirst = null;
    let tLast = null;
    try {
      for (;;) {
        const step = await core.gen_next();
        if (step == null || step.id === undefined) break;
        n++;
        tLast = performance.now();
        tFirst ??= tLast;
      }
    } finally {
      core.gen_stop();
    }
    const ms = n >= 2 ? tLast - tFirst : null;
    return { tokens: n, ms, tps: ms ? (n - 1) / (ms / 1000) : null, firstMs: tFirst != null ? tFirst - t0 : null };
  },
};

// The core's reader of the given files: {read(name, start, len) -> Uint8Array, flush() (the last progress)}; read is synchronous (FileReaderSync, which
// workers have), one slice at a time. Progress is the bytes read up to the furthest point of each file (a tensor
// read twice counts once), sent at most every 50 ms.
function fileReader(files, emit) {
  const byName = new Map(files.map((f) => [f.name, f]));
  const total = files.reduce((n, f) => n + f.size, 0);
  const reached = new Map();
  const reader = new FileReaderSync();
  let read = 0;
  let last = 0;
  emit({ kind: 'progress', read: 0, total });
  const flush = () => emit({ kind: 'progress', read, total });
  const readRange = (name, start, len) => {
    const file = byName.get(name);
    if (!file) throw new Error(`${name} is not among the files`);
    const bytes = new Uint8Array(reader.readAsArrayBuffer(file.slice(start, start + len)));
    const end = Math.min(file.size, start + len);
    const before = reached.get(name) ?? 0;
    if (end > before) {
      reached.set(name, end);
      read += end - before;
    }
    const now = performance.now();
    if (now - last > 50 || read === total) {
      last = now;
      flush();
    }
    return bytes;
  };
  return { read: readRange, flush };
}

// A new task, so that a 'stop' message gets in between two tokens. Not setTimeout(0): Chromium clamps a timer
// set from a timer's task more than 5 levels deep to 4 ms, so tokens that need no GPU wait (the CPU path,
// tokens 2..K of a chained batch) came at most every ~4.5 ms (CPU path 165 tok/s where the core does ~1,400).
// A message on a MessageChannel is a task of its own with no clamp (~0.02 ms); the page's 'stop' message,
// posted before it, runs first. The page is not flooded: generate coalesces the tokens it posts per frame.
const yieldChannel = new MessageChannel();
const yieldWaiters = [];
yieldChannel.port1.onmessage = () => yieldWaiters.shift()?.();
function nextTask() {
  return new Promise((resolve) => {
    yieldWaiters.push(resolve);
    yieldChannel.port2.postMessage(null);
  });
}

let queue = Promise.resolve();

// The handlers and www/protocol.js must list the same actions, queued alike (core.js starts a queued call's
// watchdog at its {started}): a drift stops this script here, before 'ready', and the page says so.
const drift = protocolMismatch(handlers, modelHandlers);
if (drift.length) throw new Error(`worker.js and protocol.js disagree: ${drift.join('; ')}`);

function enqueue(fn) {
  const run = queue.then(fn, fn);
  queue = run.catch(() => {});
  return run;
}

// The browser's own GPUAdapterInfo. wgpu's WebGPU backend leaves name/vendor/architecture empty in the
// browser, so the device view fills those gaps from here (and says so).
async function browserAdapterInfo() {
  try {
    const info = (await self.navigator.gpu?.requestAdapter())?.info;
    if (!info) return null;
    return { vendor: info.vendor, architecture: info.architecture, device: info.device, description: info.description };
  } catch {
    return null;
  }
}

function describe(err) {
  if (err instanceof Error) return err.message || String(err);
  if (typeof err === 'string') return err;
  try {
    return JSON.stringify(err);
  } catch {
    return String(err);
  }
}

self.addEventListener('message', async (event) => {
  const { id, type, ...args } = event.data ?? {};
  const immediate = Object.hasOwn(handlers, type) ? handlers[type] : null;
  const queued = Object.hasOwn(modelHandlers, type) ? modelHandlers[type] : null;
  if (!immediate && !queued) {
    self.postMessage({ id, ok: false, error: `worker: unknown request type ${JSON.stringify(type)}` });
    return;
  }
  if (type === 'generate') stopRequested = false; // a Stop before this request was for an earlier one
  if (type === 'trainRun') trainActive++;
  const emit = (ev) => self.postMessage({ id, event: ev });
  const hook = async () => {
    if (hangOn !== null && hangOn === type) (await loadCore()).debug_hang(); // never returns
  };
  try {
    const result = immediate
      ? await hook().then(() => immediate(args))
      : await enqueue(async () => {
        self.postMessage({ id, started: true });
        await hook();
        return queued(args, emit);
      });
    trainDone(type);
    self.postMessage({ id, ok: true, result });
  } catch (err) {
    trainDone(type);
    // A panic inside the core aborts with `unreachable`; the instance may hold broken state after that.
    const fatal = err instanceof WebAssembly.RuntimeError;
    const error = fatal && lastPanic ? `${lastPanic} (${describe(err)})` : describe(err);
    self.postMessage({ id, ok: false, error, fatal });
  }
});

function trainDone(type) {
  if (type !== 'trainRun') return;
  trainActive--;
  if (trainActive === 0) trainFlag = null;
}

// Errors nobody caught (a panic inside an async core call lands here): the page restarts this worker.
function reportFatal(err) {
  const text = describe(err);
  self.postMessage({ type: 'fatal', error: lastPanic ? `${lastPanic} (${text})` : text });
}
self.addEventListener('error', (event) => {
  event.preventDefault(); // handled here: the page hears about it as a 'fatal' message
  reportFatal(event.error ?? event.message);
});
self.addEventListener('unhandledrejection', (event) => {
  event.preventDefault();
  reportFatal(event.reason);
});

self.postMessage({ type: 'ready' });
