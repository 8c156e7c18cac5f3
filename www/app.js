// The page's UI state and what to ask the core when. The core runs in a Web Worker (www/worker.js, through
// www/core.js); views (www/views/*.js) only draw what they are given.
//
// Flow: open -> init the core (WebGPU or the CPU fallback) -> read www/models.json -> load the default model
// (fetch with progress) -> tokenize + forward() the prompt (tokens, attention, masks, experts, next token).
// Generate streams tokens from the worker; when it ends, forward() runs once on the whole sequence so that
// every view can show every step.
//
// Test hooks (documented for tests/browser/):
//   ?nogpu=1           hide WebGPU in the page and in the worker: the "WebGPU not available" path on any browser
//   ?selftest=1        run the kernel self-test on load (otherwise it runs when the button is pressed)
//   ?nomodel=1         do not load a model on open
//   ?model=PATH        load this checkpoint (a path on this origin) on open instead of the default
//   ?backend=gpu|cpu   start with "Run on" set to this path instead of "auto" (measure both, keep the faster)
//   window.tinyformer  {call(type, args), crashWorker(mode), hangNext(action, ms), state, attention()}: drive the
//                      page from a test
import { CoreWorker, CrashGuard, WorkerDiedError, RESTART_LIMIT } from './core.js';
import { fetchManifest, fetchCheckpoint } from './loader.js';
import { createDeviceView } from './views/device.js';
import { createSelftestView } from './views/selftest.js';
import { createMasksView } from './views/masks.js';
import { createModelView } from './views/model.js';
import { createGenerateView } from './views/generate.js';
import { createTokensView } from './views/tokens.js';
import { createBpeView } from './views/bpe.js';
import { createAttentionView } from './views/attention.js';
import { createNextTokenView, candidateProbs } from './views/nexttoken.js';
import { createExpertsView } from './views/experts.js';
import { createInspectView } from './views/inspect.js';
import { loadOnFasterPath, speedSummary, kvNote } from './speed.js';
import { endNote } from './context.js';

const params = new URLSearchParams(location.search);
const NO_GPU = params.get('nogpu') === '1';
const AUTO_SELFTEST = params.get('selftest') === '1';
const NO_MODEL = params.get('nomodel') === '1';
const MODEL_OVERRIDE = params.get('model');
const BACKEND_PARAM = params.get('backend');
const MAX_FILE_BYTES = 256 * 1024 * 1024;
const BOS_ID = 1; // the encoder-decoder's decoder starts from BOS
const MAX_MASK_TOKENS = 40; // the current input's masks are tables: draw at most this many tokens

if (NO_GPU) {
  try {
    Object.defineProperty(Navigator.prototype, 'gpu', { value: undefined, configurable: true });
    Object.defineProperty(navigator, 'gpu', { value: undefined, configurable: true });
  } catch { /* best effort: the worker is what matters */ }
}

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------------------------------------------------
// State

const state = {
  core: null,           // {version, gpu, hasNavigatorGpu} from the worker's 'init'
  selftestRunning: false,
  manifest: [],
  model: null,          // {card, meta: {id, name, description, source}, bytes: ArrayBuffer}
  loading: false,
  loadingMeta: null,    // the model a 'load' call is loading now (named if the worker dies meanwhile)
  promptTouched: false, // the user typed in the prompt box: a model switch must not replace it
  run: null,            // the last generation: {src, ids, gen: [id], pieces, tops, stopped, done}
  step: null,           // selected generation step
  analysis: null,       // the last forward() and its labels
  speed: {},            // model id -> the probe's {gpu, cpu, errors} (measured once per model and page)
};

let coreReady = null; // Promise of the init result

// ---------------------------------------------------------------------------------------------------------
// Views

const noticeEl = $('worker-notice');
const backendNotice = $('backend-notice');
const versionEl = $('core-version');

function showNotice(el, text, { kind = 'warning', dismissible = true } = {}) {
  el.replaceChildren();
  const p = document.createElement('p');
  p.textContent = text;
  el.append(p);
  if (dismissible) {
    const close = document.createElement('button');
    close.type = 'button';
    close.className = 'notice-close';
    close.textContent = 'Dismiss';
    close.addEventListener('click', () => { el.hidden = true; });
    el.append(close);
  }
  el.dataset.kind = kind;
  el.hidden = false;
}

const device = createDeviceView($('device-status'));
const selftest = createSelftestView({
  button: $('selftest-run'),
  summary: $('selftest-summary'),
  table: $('selftest-table'),
  onRun: () => runSelftest(),
});
const masks = createMasksView({
  form: $('masks-form'),
  grid: $('masks-grid'),
  errorEl: $('masks-error'),
  toggle: $('masks-seed-convention'),
  legend: $('masks-legend'),
  inputGrid: $('masks-input'),
  request: (args) => core.call('masks', args),
});
const modelView = createModelView({
  list: $('model-list'),
  fileInput: $('model-file'),
  progress: $('model-progress'),
  progressBar: $('model-progress-bar'),
  progressText: $('model-progress-text'),
  errorEl: $('model-error'),
  card: $('model-card'),
  onPick: (entry) => loadFromUrl(entry),
  onFile: (file) => loadFromFile(file),
});
const gen = createGenerateView({
  form: $('gen-form'),
  prompt: $('prompt'),
  promptLabel: $('prompt-label'),
  startBtn: $('gen-start'),
  stopBtn: $('gen-stop'),
  stats: $('gen-stats'),
  output: $('gen-output'),
  errorEl: $('gen-error'),
  kvBox: $('gen-kv'),
  slideBox: $('gen-slide'),
  endEl: $('gen-end'),
  onStart: () => generate(),
  onStop: () => stop(),
  onSelectStep: (s) => selectStep(s),
  onPromptInput: () => {
    state.promptTouched = true;
    scheduleAnalysis();
  },
});
const tokens = createTokensView($('tokens-root'));
createBpeView($('bpe-root'), { request: (args) => core.call('bpe', args) });
const attention = createAttentionView($('attention-root'), { onSelectStep: (s) => selectStep(s) });
const nextView = createNextTokenView($('next-root'));
const experts = createExpertsView($('experts-root'));
const inspectView = createInspectView($('inspect-root'), { call: (type, args) => core.call(type, args) });
for (const id of ['gen-temperature', 'gen-top-k', 'gen-top-p']) $(id).addEventListener('input', () => refreshNextToken());
// Auto (the faster path, measured), WebGPU or the CPU path: the same model is loaded again where asked.
if (['gpu', 'cpu'].includes(BACKEND_PARAM)) $('model-backend').value = BACKEND_PARAM;
$('model-backend').addEventListener('change', () => {
  if (state.model) loadBytes(state.model.bytes, state.model.meta, { switchBackend: true });
});
// Without the KV cache every token re-runs the whole sequence: say so, with the cost for the current numbers.
for (const id of ['gen-kv', 'gen-max', 'prompt']) $(id).addEventListener('input', () => showKvNote());
$('gen-kv').addEventListener('change', () => showKvNote());

// ---------------------------------------------------------------------------------------------------------
// The worker

const PROMPT_KEY = 'tinyformer.prompt';

/** The GPU device is gone: say so, and offer a reload that brings the prompt back. */
function gpuLost(message) {
  if (document.body.dataset.gpuLost === '1') return;
  document.body.dataset.gpuLost = '1';
  showNotice(noticeEl, `The GPU device was lost (${message}). Reload the page to get a new one; your prompt is kept.` +
    ' Or set "Run on" to the CPU path to go on now.', { kind: 'error' });
  const reload = document.createElement('button');
  reload.type = 'button';
  reload.id = 'gpu-lost-reload';
  reload.textContent = 'Reload the page';
  reload.addEventListener('click', () => {
    try { sessionStorage.setItem(PROMPT_KEY, document.getElementById('prompt')?.value ?? ''); } catch { /* storage off */ }
    location.reload();
  });
  noticeEl.append(reload);
}

// Crash-loop guard: the model that was loading or running when the worker died is named, and is not
// loaded again blindly (never after a crash during its own load; once after a crash while it ran).
const crashGuard = new CrashGuard();

// Calls that run the model: a crash during one of these is the model's. The BPE workbench, the masks and
// the self-test do not touch it, so a crash there reloads the model as before.
const MODEL_ACTIONS = new Set(['load', 'describe', 'tokenize', 'decode', 'token_strings', 'forward', 'generate']);

/** The model involved when the worker died during `action`, and whether it may be loaded again. */
function crashCulprit(action) {
  if (!MODEL_ACTIONS.has(action)) return null;
  const meta = action === 'load' ? state.loadingMeta : state.model?.meta;
  if (!meta) return null;
  return { meta, ...crashGuard.record(meta.id, action), loading: action === 'load' };
}

const core = new CoreWorker({
  noGpu: NO_GPU,
  onGpuLost: gpuLost,
  onRestart: (reason, { action } = {}) => {
    const culprit = crashCulprit(action);
    const blocked = culprit && !culprit.reload ? culprit.meta : null;
    if (blocked && state.model?.meta.id === blocked.id) state.model = null; // do not load it again by itself
    let text = `The compute worker stopped (${reason}) and was restarted. Your inputs are kept`;
    if (blocked) {
      text += `. It stopped while ${blocked.name} was ${culprit.loading ? 'loading' : 'running'}` +
        `${culprit.count > 1 ? ` (${culprit.count} times)` : ''}, so ${blocked.name} was not loaded again;` +
        ' choose it again to retry';
      document.body.dataset.crashedModel = blocked.id;
      modelView.showError(`${blocked.name} stopped the compute worker (${reason}) and was not loaded again.`);
    }
    showNotice(noticeEl, `${text}${state.model ? `, and ${state.model.meta.name} is being loaded again` : ''}.`);
    document.body.dataset.workerRestarts = String(Number(document.body.dataset.workerRestarts ?? 0) + 1);
    coreReady = initCore({ afterRestart: true });
    masks.refresh(); // redraw from the inputs as they are now: nothing typed is lost
    gen.setReady(false); // until a model is loaded again
    if (state.model) {
      const { bytes, meta } = state.model;
      coreReady.then(() => loadBytes(bytes, meta, { reload: true }));
    }
  },
  onGiveUp: (reason, { action } = {}) => {
    const culprit = crashCulprit(action);
    showNotice(noticeEl, `The compute worker stopped again (${reason}). It stopped ${RESTART_LIMIT} times within a minute, ` +
      'so it was not restarted: reload the page to try again. Your inputs are still on the page.' +
      (culprit ? ` It stopped while ${culprit.meta.name} was ${culprit.loading ? 'loading' : 'running'}.` : ''), { kind: 'error' });
    device.showError('The compute worker is not running.');
    selftest.setUnavailable('The compute worker is not running; reload the page.');
    gen.setReady(false);
  },
});

async function initCore({ afterRestart = false } = {}) {
  device.showLoading();
  let info;
  try {
    info = await core.call('init');
  } catch (err) {
    if (err instanceof WorkerDiedError) return null; // the restart handler takes over
    versionEl.textContent = 'not loaded';
    versionEl.dataset.state = 'error';
    device.showError(err.message);
    selftest.setUnavailable('The wasm core did not load, so the self-test cannot run.');
    modelView.showError(`The wasm core did not load, so no model can run: ${err.message}`);
    return null;
  }
  state.core = info;
  versionEl.textContent = info.version;
  versionEl.dataset.state = 'ready';
  device.show(info);
  document.body.dataset.backend = info.gpu?.ok ? 'gpu' : 'cpu';
  $('model-backend').disabled = !info.gpu?.ok; // without a GPU there is nothing to choose
  if (info.gpu?.ok) {
    backendNotice.hidden = true;
    selftest.setReady();
    if (AUTO_SELFTEST && !afterRestart) runSelftest();
  } else {
    const why = info.hasNavigatorGpu === false
      ? 'This browser has no WebGPU'
      : 'WebGPU is present but gave no usable GPU adapter';
    showNotice(backendNotice, `${why}, so the models run on the CPU path of the same Rust core (in WebAssembly). ` +
      'Every view works; the kernel self-test needs WebGPU. “About this device” shows the measured speed.', { kind: 'warning' });
    backendNotice.dataset.reason = info.hasNavigatorGpu === false ? 'no-webgpu' : 'no-adapter';
    selftest.setUnavailable('The self-test needs WebGPU, which this browser does not provide (see "About this device").');
  }
  return info;
}

async function runSelftest() {
  if (state.selftestRunning || !state.core?.gpu?.ok) return;
  state.selftestRunning = true;
  selftest.setRunning();
  const t0 = performance.now();
  try {
    const results = await core.call('selftest');
    selftest.setResults(results, performance.now() - t0);
  } catch (err) {
    selftest.setError(err instanceof WorkerDiedError
      ? `The worker stopped during the self-test: ${err.reason}`
      : `The self-test could not run: ${err.message}`);
  } finally {
    state.selftestRunning = false;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Models

async function loadManifest() {
  try {
    state.manifest = await fetchManifest(new URL('models.json', import.meta.url));
    modelView.setManifest(state.manifest);
  } catch (err) {
    state.manifest = [];
    modelView.setManifest([], `The list of shipped models (www/models.json) could not be read: ${err.message}. ` +
      'You can still open a checkpoint of your own.');
  }
  return state.manifest;
}

/** Fetches a checkpoint with a progress bar, then loads it. entry: {id, name, file, description, prompt} */
async function loadFromUrl(entry) {
  if (state.loading) return;
  state.loading = true;
  modelView.clearError();
  modelView.setLoading(entry.name ?? entry.id);
  const label = `Downloading ${entry.name ?? entry.file}`;
  let bytes;
  try {
    bytes = await fetchCheckpoint(entry.file, (loaded, total) => modelView.showProgress(label, loaded, total));
  } catch (err) {
    state.loading = false;
    modelView.hideProgress();
    modelView.showError(`Could not load ${entry.name ?? entry.file}: ${err.message}` + stillLoaded());
    return;
  }
  state.loading = false;
  await loadBytes(bytes, { id: entry.id, name: entry.name ?? entry.id, description: entry.description, prompt: entry.prompt,
    sampling: entry.sampling, source: entry.file });
}

async function loadFromFile(file) {
  if (state.loading) return;
  modelView.clearError();
  if (file.size > MAX_FILE_BYTES) {
    modelView.showError(`${file.name} is ${Math.round(file.size / 1048576)} MiB; the page takes checkpoints up to ` +
      `${MAX_FILE_BYTES / 1048576} MiB.` + stillLoaded());
    return;
  }
  state.loading = true;
  let bytes;
  try {
    modelView.showProgress(`Reading ${file.name}`, 0, file.size);
    bytes = await file.arrayBuffer();
  } catch (err) {
    state.loading = false;
    modelView.hideProgress();
    modelView.showError(`Could not read ${file.name}: ${err.message}` + stillLoaded());
    return;
  }
  state.loading = false;
  await loadBytes(bytes, { id: file.name, name: file.name, source: '(your file)', description: '' });
}

function stillLoaded() {
  return state.model ? ` ${state.model.meta.name} is still loaded.` : '';
}

async function loadBytes(bytes, meta, { reload = false, switchBackend = false } = {}) {
  if (state.loading && !reload) return;
  state.loading = true;
  if (gen.running && !reload) {
    // A new model while one generates: stop it first, so that its last steps are not read with the new model.
    await stop();
    await generationDone;
  }
  const info = state.core ?? await coreReady;
  modelView.showPreparing(meta.name);
  if (!reload) gen.setReady(false);
  let card;
  try {
    // Copies go to the worker; this one stays here so that a restarted worker can load it again.
    state.loadingMeta = meta;
    card = await loadOnBestPath(bytes, meta, Boolean(info?.gpu?.ok));
  } catch (err) {
    state.loading = false;
    state.loadingMeta = null;
    modelView.hideProgress();
    if (!(err instanceof WorkerDiedError)) {
      modelView.showError(`Could not load ${meta.name}: ${err.message}.` + stillLoaded());
    }
    gen.setReady(Boolean(state.model));
    return;
  }
  state.loading = false;
  state.loadingMeta = null;
  modelView.hideProgress();
  const previous = state.model;
  state.model = { card, meta, bytes };
  modelView.showCard(card, meta);
  modelView.setCurrent(meta.id);
  document.body.dataset.model = meta.id;
  const isEncDec = card.arch === 'encoder_decoder';
  gen.setMode(isEncDec ? 'source' : card.tokenizer ? 'text' : 'ids');
  if (!reload && !switchBackend) {
    // A prompt saved by "Reload the page" after a lost GPU device comes back here.
    let saved = null;
    try {
      saved = sessionStorage.getItem(PROMPT_KEY);
      sessionStorage.removeItem(PROMPT_KEY);
    } catch { /* storage off */ }
    if (saved !== null) {
      $('prompt').value = saved;
      state.promptTouched = true;
    }
    const promptEl = $('prompt');
    const untouched = !state.promptTouched || promptEl.value.trim() === '';
    if (untouched || (previous && promptEl.value === previous.meta.prompt)) {
      promptEl.value = meta.prompt ?? (card.tokenizer ? '' : '1 5 9 13');
      state.promptTouched = false;
    }
    // A prompt that suits the model kind when the user never typed one.
    if (!card.tokenizer && !/^[\d\s,]*$/.test(promptEl.value) && !state.promptTouched) promptEl.value = '1 5 9 13';
    applySampling(meta.sampling, previous?.meta.sampling);
    state.run = null;
    state.step = null;
  }
  gen.setReady(true);
  showKvNote();
  if (!reload) clearStaleErrors(); // a reload after a worker restart keeps the lines that say what happened
  await analyze();
}

/** After a success (a model loaded, a generation done), the error lines of earlier failures are out of date. */
function clearStaleErrors() {
  modelView.clearError();
  if (!gen.running) gen.clearError();
}

/** Loads the model where "Run on" says (auto: measured on both paths, the faster kept; www/speed.js). */
async function loadOnBestPath(bytes, meta, gpuOk) {
  const choice = gpuOk ? $('model-backend').value : 'cpu';
  const { card, results, chosen } = await loadOnFasterPath({
    call: (type, args) => core.call(type, args), bytes, meta, gpuOk, choice, measured: state.speed[meta.id],
    onMeasuring: (text) => modelView.showPreparing(`${meta.name}: ${text}`),
  });
  state.speed[meta.id] = results;
  device.showSpeed({ model: meta.name, results, chosen, choice, summary: speedSummary(results, chosen, choice) });
  document.body.dataset.backend = card.backend;
  return card;
}

/** The KV-cache note under Generate: why uncached generation is slow, with the cost for the current prompt. */
function showKvNote() {
  const el = $('gen-kv-note');
  const card = state.model?.card;
  const note = card && !$('gen-kv').checked
    ? kvNote(card, { promptLen: state.lastPromptLen ?? 0, maxNew: Number($('gen-max').value) || 0, sliding: $('gen-slide').checked })
    : null;
  el.hidden = !note;
  if (!note) return;
  el.dataset.cached = String(note.cached);
  el.dataset.uncached = String(note.uncached);
  el.textContent = note.text;
}

// A model may suggest sampling settings (the date model: greedy, 12 tokens). Switching back to a model that
// suggests none restores what the controls held before.
const SAMPLING_INPUTS = { temperature: 'gen-temperature', top_k: 'gen-top-k', top_p: 'gen-top-p', seed: 'gen-seed', max_new_tokens: 'gen-max' };
let savedSampling = null;
function applySampling(suggested, previousSuggested) {
  if (suggested) {
    if (!previousSuggested) savedSampling = Object.fromEntries(Object.entries(SAMPLING_INPUTS).map(([k, id]) => [k, $(id).value]));
    for (const [k, v] of Object.entries(suggested)) if (SAMPLING_INPUTS[k]) $(SAMPLING_INPUTS[k]).value = String(v);
  } else if (previousSuggested && savedSampling) {
    for (const [k, v] of Object.entries(savedSampling)) $(SAMPLING_INPUTS[k]).value = v;
    savedSampling = null;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Prompt -> ids, and the analysis (forward) of the current sequence

function visible(s) {
  return String(s).replace(/ /g, '·').replace(/\n/g, '⏎');
}

/** The prompt box as token ids: {ids, tok (for the Tokens view)} or {error}. */
async function encodePrompt() {
  const text = $('prompt').value;
  const card = state.model.card;
  if (!card.tokenizer) {
    const parts = text.split(/[\s,]+/).filter(Boolean);
    const ids = parts.map(Number);
    const bad = parts.find((p, i) => !Number.isInteger(ids[i]) || ids[i] < 0);
    if (bad !== undefined) return { error: `"${bad}" is not a token id: this checkpoint has no tokenizer, so type ids like 1 5 9.` };
    const limit = card.src_vocab_size ?? card.vocab_size;
    const over = ids.find((i) => i >= limit);
    if (over !== undefined) return { error: `Token id ${over} is outside the vocabulary (0 to ${limit - 1}).` };
    const pieces = ids.length ? await core.call('token_strings', { ids }) : [];
    return { ids, tok: { kind: 'ids', ids, pieces } };
  }
  const tok = await core.call('tokenize', { text });
  return { ids: tok.ids, tok };
}

let analysisTimer = null;
let analysisSeq = 0;

function scheduleAnalysis() {
  clearTimeout(analysisTimer);
  analysisTimer = setTimeout(() => analyze(), 350);
}

/** Tokenizes the prompt and runs forward() on it (no generation shown). */
async function analyze() {
  clearTimeout(analysisTimer);
  if (!state.model || gen.running) return;
  const mine = ++analysisSeq;
  const card = state.model.card;
  let enc;
  try {
    enc = await encodePrompt();
  } catch (err) {
    if (mine === analysisSeq && !(err instanceof WorkerDiedError)) tokens.showError(err.message);
    return;
  }
  if (mine !== analysisSeq) return;
  if (enc.error) {
    tokens.showError(enc.error);
    return;
  }
  tokens.show(enc.tok, $('prompt').value, { title: card.arch === 'encoder_decoder' ? 'Source' : 'Prompt' });
  if (!enc.ids.length) {
    clearAnalysis('Type a prompt to see the model\u2019s attention, masks and next-token candidates.');
    return;
  }
  state.lastPromptLen = enc.ids.length;
  showKvNote();
  if (card.arch === 'encoder_decoder' && enc.ids.length > card.context) {
    clearAnalysis(`The source has ${enc.ids.length} tokens but the model\u2019s context is ${card.context}: shorten it.`);
    return;
  }
  state.run = null;
  state.step = null;
  await runAnalysis({ src: enc.ids, srcPieces: enc.tok.pieces, gen: [], genPieces: [], tops: [] }, mine);
}

function clearAnalysis(message) {
  state.analysis = null;
  attention.clear(message);
  nextView.clear(message);
  experts.clear(state.model?.card.experts ? message : 'This model has no experts: every token goes through the same feed-forward network.');
  masks.clearInput(message);
  inspectView.clear(message);
}

/**
 * forward() over the prompt and what was generated after it, then every view.
 * seq: {src: prompt/source ids, srcPieces, gen: generated ids, genPieces, tops: per-step candidates}
 */
async function runAnalysis(seq, mine = ++analysisSeq) {
  const card = state.model.card;
  const isEncDec = card.arch === 'encoder_decoder';
  let result;
  let labels;
  let ids;
  let tgt;
  let offset = 0;     // tokens of the sequence before the analysed window
  let windowNote = '';
  try {
    if (isEncDec) {
      ids = seq.src;
      tgt = [BOS_ID, ...seq.gen].slice(0, card.context);
      const [bos] = await core.call('token_strings', { ids: [BOS_ID] });
      const tgtPieces = [bos, ...seq.genPieces].map(visible);
      const srcPieces = seq.srcPieces.map(visible);
      labels = {
        encoder: { rows: srcPieces, cols: srcPieces },
        decoder: { rows: tgtPieces, cols: tgtPieces },
        cross: { rows: tgtPieces, cols: srcPieces },
      };
    } else {
      // Past the context (a sliding window), the analysis covers the newest tokens that fit: what the model
      // read at the last step.
      const all = [...seq.src, ...seq.gen];
      offset = Math.max(0, all.length - card.context);
      ids = all.slice(offset);
      const pieces = [...seq.srcPieces, ...seq.genPieces].slice(offset).map(visible);
      labels = { decoder: { rows: pieces, cols: pieces } };
      if (offset > 0) {
        windowNote = `The sequence has ${all.length} tokens but the model\u2019s context is ${card.context}: these maps cover ` +
          `tokens ${offset} to ${all.length - 1}, the newest that fit (what the model reads for the next token); the first ${offset} ` +
          `do not fit${seq.gen.length ? ' and were forgotten by the sliding window' : ' (Generate refuses them unless the window slides)'}.`;
      }
    }
    result = await core.call('forward', { ids, tgt });
  } catch (err) {
    if (mine === analysisSeq && !(err instanceof WorkerDiedError)) clearAnalysis(`The forward pass failed: ${err.message}`);
    return;
  }
  if (mine !== analysisSeq) return;
  // The query row whose output chose generated token s.
  const startLen = isEncDec ? 1 : seq.src.length;
  state.analysis = { seq, result, labels, stepRow: (s) => startLen + s - 1 - offset, isEncDec, offset, windowNote, ids, tgt };
  await renderAnalysis();
}

// Each view in its own task, so that no single task holds the main thread for long.
const nextTask = () => new Promise((r) => setTimeout(r, 0));

async function renderAnalysis() {
  const a = state.analysis;
  if (!a) return;
  const card = state.model.card;
  attention.show({
    maps: a.result.attention, masks: a.result.masks, labels: a.labels,
    heads: card.heads, kvHeads: card.kv_heads, model: state.model.meta.id,
    steps: a.seq.genPieces.map(visible), stepRow: a.stepRow, note: a.windowNote,
  });
  if (state.step != null) attention.setStep(state.step);
  await nextTask();
  refreshExperts();
  await nextTask();
  refreshNextToken();
  await nextTask();
  masks.showInput({ masks: cropMasks(a.result.masks), labels: a.labels });
  inspectView.setInput({ ids: a.ids, tgt: a.tgt, card });
}

function cropMasks(ms) {
  const out = {};
  for (const [k, m] of Object.entries(ms ?? {})) {
    if (m.rows <= MAX_MASK_TOKENS && m.cols <= MAX_MASK_TOKENS) {
      out[k] = m;
      continue;
    }
    const rows = Math.min(m.rows, MAX_MASK_TOKENS);
    const cols = Math.min(m.cols, MAX_MASK_TOKENS);
    const data = new Float32Array(rows * cols);
    for (let i = 0; i < rows; i++) data.set(m.data.subarray(i * m.cols, i * m.cols + cols), i * cols);
    out[k] = { rows, cols, data, cropped: true };
  }
  return out;
}

function refreshExperts() {
  const a = state.analysis;
  if (!a) return;
  if (!a.result.moe?.length) {
    experts.clear('This model has no experts: every token goes through the same feed-forward network.');
    return;
  }
  experts.show({ moe: a.result.moe, labels: a.labels.decoder.rows }, state.step != null ? a.stepRow(state.step) : null);
}

async function refreshNextToken() {
  const a = state.analysis;
  const run = state.run;
  if (state.step != null && run?.tops?.[state.step]) {
    const s = state.step;
    const w = run.windows?.[s] ?? 0;
    nextView.show(run.tops[s].map((c) => ({ ...c, piece: visible(c.piece) })), {
      title: `Step ${s}: the candidates the sampler saw (after temperature, top-k and top-p); it chose ${JSON.stringify(visible(run.pieces[s]))}.` +
        (w > 0 ? ` The model read tokens ${w} to ${run.src.length + s - 1} (the sliding window).` : ''),
      chosen: run.gen[s],
    });
    return;
  }
  if (!a) return;
  const opts = gen.sampling();
  if (!opts) return;
  const lg = a.result.logits;
  const row = lg.rows - 1;
  const probs = candidateProbs(lg.data.subarray(row * lg.cols, (row + 1) * lg.cols), opts);
  const order = Array.from(probs.keys()).sort((x, y) => probs[y] - probs[x] || x - y).slice(0, 10);
  let pieces;
  try {
    pieces = await core.call('token_strings', { ids: order });
  } catch {
    return;
  }
  if (state.analysis !== a || (state.step != null && state.run?.tops?.[state.step])) return;
  const last = a.labels.decoder.rows[row] ?? '';
  nextView.show(order.map((id, i) => ({ id, p: probs[id], piece: visible(pieces[i]) })), {
    title: `After ${JSON.stringify(last)} (position ${row + (a.offset ?? 0)}${a.offset ? `; the model reads tokens ${a.offset} to ${a.offset + row}` : ''}), with temperature ${opts.temperature}, top-k ${opts.top_k}, top-p ${opts.top_p}` +
      `${opts.temperature === 0 ? ' (temperature 0 = greedy: plain softmax, the top one is always chosen)' : ''}.`,
  });
}

function selectStep(s) {
  state.step = s;
  gen.select(s);
  attention.setStep(s);
  refreshNextToken();
  const a = state.analysis;
  if (a?.result.moe?.length) experts.setFocus(s != null ? a.stepRow(s) : null);
  document.body.dataset.step = s == null ? '' : String(s);
}

// ---------------------------------------------------------------------------------------------------------
// Generation

let generationDone = Promise.resolve(); // settles when the current generate() (with its analysis) is over

function generate(extra = {}) {
  if (!state.model || gen.running) return generationDone;
  generationDone = runGeneration(extra).catch(() => {});
  return generationDone;
}

/** keepLast: the user chose "Keep the last N tokens" for a prompt longer than the context (a sliding window). */
async function runGeneration({ keepLast = false } = {}) {
  gen.clearError();
  const { opts, error } = gen.readOptions();
  if (error) return gen.showError(error);
  if (keepLast) {
    $('gen-slide').checked = true;
    opts.sliding_window = true;
  }
  const card = state.model.card;
  const isEncDec = card.arch === 'encoder_decoder';
  let enc;
  try {
    enc = await encodePrompt();
  } catch (err) {
    return gen.showError(err.message);
  }
  if (enc.error) return gen.showError(enc.error);
  if (!enc.ids.length) return gen.showError(isEncDec ? 'Type a date (or any sentence) to translate first.' : 'Type a prompt first.');
  if (!isEncDec && enc.ids.length >= card.context && !opts.sliding_window) {
    const keep = card.context - 1;
    return gen.showError(`The prompt has ${enc.ids.length} tokens and the model\u2019s context is ${card.context}: ` +
      'there is no room for a new token. Shorten the prompt, or', {
      id: 'gen-keep-last',
      label: `Keep the last ${keep} tokens`,
      onClick: () => generate({ keepLast: true }),
    });
  }
  if (isEncDec && enc.ids.length > card.context) {
    return gen.showError(`The source has ${enc.ids.length} tokens but the model\u2019s context is ${card.context}.`);
  }
  tokens.show(enc.tok, $('prompt').value, { title: isEncDec ? 'Source' : 'Prompt' });
  clearTimeout(analysisTimer);
  analysisSeq++; // an analysis still in flight must not draw over the generation
  const run = {
    src: enc.ids, srcPieces: enc.tok.pieces, promptCut: 0, gen: [], pieces: [], texts: [], tops: [], windows: [],
    stopped: false, reason: null,
  };
  state.run = run;
  state.step = null;
  state.analysis = null; // the views wait for this run's analysis: nothing stale is drawn or selected
  document.body.dataset.step = '';
  analysingViews('Generating\u2026 this view shows every step once the generation ends and its analysis lands.', 'generating');
  const promptText = $('prompt').value;
  gen.begin({ promptText, isSource: isEncDec });
  const t0 = performance.now();
  let tFirst = null;
  let result;
  try {
    result = await core.call('generate', { ids: enc.ids, opts: { ...opts, top: 10, attention: false } }, {
      onEvent: (ev) => {
        if (ev.kind === 'start' && !isEncDec && ev.ids.length < enc.ids.length) {
          // The sliding window cut the prompt to its newest tokens: the model never reads the others.
          run.promptCut = enc.ids.length - ev.ids.length;
          run.src = enc.ids.slice(run.promptCut);
          run.srcPieces = enc.tok.pieces.slice(run.promptCut);
          tokens.show(enc.tok, promptText, { title: 'Prompt', cut: run.promptCut });
        }
        if (ev.kind !== 'token') return;
        const now = performance.now();
        tFirst ??= now;
        run.gen.push(ev.id);
        run.pieces.push(ev.piece);
        run.texts.push(ev.text);
        run.tops.push(ev.top ?? null);
        run.windows.push(ev.window_start ?? 0);
        gen.addToken(ev);
        const n = run.gen.length;
        gen.setStats({
          count: n,
          ttftMs: tFirst - t0,
          tps: n >= 2 ? (n - 1) / ((now - tFirst) / 1000) : null,
          backend: card.backend,
          kvCache: opts.kv_cache,
        });
      },
    });
  } catch (err) {
    gen.finish({ state: 'error' });
    gen.showError(err instanceof WorkerDiedError
      ? `The compute worker stopped during generation (${err.reason}). It was restarted; your prompt is kept.`
      : `Generation failed: ${err.message}`);
    analyze();
    return;
  }
  run.stopped = result.stopped;
  run.reason = result.stopped ? 'stopped' : result.reason ?? null;
  let text = run.texts.join('') + (result.text ?? '');
  if (card.tokenizer) {
    try {
      text = await core.call('decode', { ids: run.gen });
    } catch { /* keep the streamed text */ }
  }
  const n = run.gen.length;
  if (n > 0) analysingViews(`Analysing the ${n} generated token${n === 1 ? '' : 's'}\u2026 (one forward pass over the whole sequence)`, 'analysing');
  gen.finish({ state: result.stopped ? 'stopped' : 'done', text, reason: run.reason, note: endNote(run, card.context) });
  clearStaleErrors();
  const total = (performance.now() - t0) / 1000;
  gen.setStats({
    count: n,
    ttftMs: tFirst != null ? tFirst - t0 : null,
    tps: n >= 2 ? (n - 1) / ((performance.now() - tFirst) / 1000) : n / total,
    backend: card.backend,
    kvCache: opts.kv_cache,
  });
  if (n > 0) {
    await runAnalysis({ src: run.src, srcPieces: run.srcPieces, gen: run.gen, genPieces: run.pieces, tops: run.tops });
  } else {
    await analyze();
  }
}

/** Attention, Next token and Experts wait for the analysis of a generation (state: 'generating' | 'analysing'). */
function analysingViews(message, stateName) {
  attention.wait(message, stateName);
  experts.wait(state.model?.card.experts ? message : null, stateName);
  // A selected step shows the candidates the sampler reported while streaming: those stay.
  if (!(state.step != null && state.run?.tops?.[state.step])) {
    nextView.wait(stateName === 'generating'
      ? 'Generating\u2026 click a generated token to see the candidates the sampler saw at that step.'
      : message, stateName);
  }
}

async function stop() {
  try {
    await core.call('stop');
  } catch { /* the worker is gone: the generation is over anyway */ }
}

// ---------------------------------------------------------------------------------------------------------
// Start

// Console / test access. Read-only state plus actions; nothing here is needed by the page itself.
window.tinyformer = {
  call: (type, args) => core.call(type, args),
  crashWorker: (mode = 'panic') => core.call('crash', { mode }).catch((e) => e.message),
  // Watchdog tests: the next `action` call spins forever in the core, and gets a limit of `ms`.
  hangNext: (action, ms) => { core.setTestLimit(action, ms); return core.call('hangNext', { action }); },
  loseDevice: () => core.call('loseDevice', {}),
  get state() {
    return {
      core: state.core, model: state.model && { card: state.model.card, meta: state.model.meta },
      run: state.run && { gen: [...state.run.gen], pieces: [...state.run.pieces], stopped: state.run.stopped },
      step: state.step,
    };
  },
  attention: () => attention.exportObject(),
};

coreReady = initCore();
masks.refresh(); // masks need only the wasm core, not the GPU: ask at once
(async () => {
  const manifest = await loadManifest();
  if (NO_MODEL) return;
  await coreReady;
  if (MODEL_OVERRIDE) {
    const known = manifest.find((m) => m.file === MODEL_OVERRIDE);
    const name = MODEL_OVERRIDE.split('/').pop();
    await loadFromUrl(known ?? { id: name, name, file: MODEL_OVERRIDE, description: '' });
    return;
  }
  const def = manifest.find((m) => m.default) ?? manifest[0];
  if (def) await loadFromUrl(def);
})();
