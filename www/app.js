// The controller: what to ask the core when, around the one state object (www/state.js). The core runs in a
// Web Worker (www/worker.js, through www/core.js); views (www/views/*.js) own their DOM and only draw what they
// are given; www/prompt.js reads the prompt (through the Generate view, which owns the prompt box) and
// www/analysis.js wires the analysis pass to the views. The model's rules (token ids and the vocabulary,
// context limits, the decoder's start, candidate probabilities) are the core's (src/session/).
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
import { runsModel } from './protocol.js';
import { fetchManifest, fetchCheckpoint } from './loader.js';
import { createDeviceView } from './views/device.js';
import { createSelftestView } from './views/selftest.js';
import { createMasksView } from './views/masks.js';
import { createModelView } from './views/model.js';
import { createGenerateView } from './views/generate.js';
import { createTokensView } from './views/tokens.js';
import { createBpeView } from './views/bpe.js';
import { createAttentionView } from './views/attention.js';
import { createNextTokenView } from './views/nexttoken.js';
import { createExpertsView } from './views/experts.js';
import { createInspectView } from './views/inspect.js';
import { createTrainView } from './views/train.js';
import { loadOnFasterPath, speedSummary, kvNote } from './speed.js';
import { endNote } from './context.js';
import { state } from './state.js';
import { createPrompt } from './prompt.js';
import { createAnalysis } from './analysis.js';
import { count, sentence } from './dom.js';

const params = new URLSearchParams(location.search);
const NO_GPU = params.get('nogpu') === '1';
const AUTO_SELFTEST = params.get('selftest') === '1';
const NO_MODEL = params.get('nomodel') === '1';
const MODEL_OVERRIDE = params.get('model');
const BACKEND_PARAM = params.get('backend');
const MAX_FILE_BYTES = 256 * 1024 * 1024;

if (NO_GPU) {
  try {
    Object.defineProperty(Navigator.prototype, 'gpu', { value: undefined, configurable: true });
    Object.defineProperty(navigator, 'gpu', { value: undefined, configurable: true });
  } catch { /* best effort: the worker is what matters */ }
}

const $ = (id) => document.getElementById(id);

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
  dropZone: $('model-drop'),
  progress: $('model-progress'),
  progressBar: $('model-progress-bar'),
  progressText: $('model-progress-text'),
  errorEl: $('model-error'),
  card: $('model-card'),
  onPick: (entry) => loadFromUrl(entry),
  onFiles: (files) => loadFromFiles(files),
});
const gen = createGenerateView({
  form: $('gen-form'),
  prompt: $('prompt'),
  promptLabel: $('prompt-label'),
  promptNote: $('prompt-note'),
  startBtn: $('gen-start'),
  stopBtn: $('gen-stop'),
  stats: $('gen-stats'),
  output: $('gen-output'),
  errorEl: $('gen-error'),
  kvBox: $('gen-kv'),
  slideBox: $('gen-slide'),
  kvNote: $('gen-kv-note'),
  endEl: $('gen-end'),
  onStart: () => generate(),
  onStop: () => stop(),
  onSelectStep: (s) => analysis.selectStep(s),
  onPromptInput: () => {
    state.promptTouched = true;
    prompt.typed();
    analysis.schedule();
  },
  onSamplingInput: () => analysis.refreshNextToken(),
  onKvInput: () => showKvNote(),
});
const tokens = createTokensView($('tokens-root'));
createBpeView($('bpe-root'), { request: (args) => core.call('bpe', args) });
const attention = createAttentionView($('attention-root'), { onSelectStep: (s) => analysis.selectStep(s) });
const nextView = createNextTokenView($('next-root'));
const experts = createExpertsView($('experts-root'));
const inspectView = createInspectView($('inspect-root'), {
  onInspect: (request) => answer('inspect', request, inspectView.showReport, inspectView.showError),
  onGenerate: (request) => answer('generate_ablated', request, inspectView.showGenerated, inspectView.showGenerateError),
});
const prompt = createPrompt({ gen, call });
const analysis = createAnalysis({
  views: { tokens, attention, nextView, experts, masks, inspectView, gen },
  prompt,
  call,
  onPromptLength: () => showKvNote(),
});
// Auto (the faster path, measured), WebGPU or the CPU path: the same model is loaded again where asked.
if (['gpu', 'cpu'].includes(BACKEND_PARAM)) $('model-backend').value = BACKEND_PARAM;
$('model-backend').addEventListener('change', () => {
  if (state.model) loadSource(state.model.source, state.model.meta, { switchBackend: true });
});

// The training lab: its run lives in the worker beside the loaded model; "Run on" chooses its path.
const trainView = createTrainView($('train-root'), {
  request: (type, args, opts) => core.call(type, args, opts),
  runOn: () => {
    if (!state.core?.gpu?.ok) return 'cpu';
    const choice = $('model-backend').value;
    if (choice === 'gpu' || choice === 'cpu') return choice;
    return state.model?.card?.backend === 'gpu' ? 'gpu' : 'cpu'; // the faster path measured for the loaded model
  },
  onUseModel: (bytes, { name }) => {
    const meta = { id: 'trained-here', name, source: '(trained in this page)', description: 'The model of the training lab, as trained so far.' };
    return loadSource({ bytes }, meta);
  },
});

// ---------------------------------------------------------------------------------------------------------
// The worker

/** A worker call (core.call), for the modules that ask the core: the prompt, the analysis, the speed probe. */
function call(type, args, opts) {
  return core.call(type, args, opts);
}

/** Asks the worker `type` for a view's request; the view draws the result, or the error's message. */
function answer(type, request, show, fail) {
  call(type, request).then((result) => show(request, result)).catch((err) => fail(request, err.message));
}

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
    prompt.saveForReload();
    location.reload();
  });
  noticeEl.append(reload);
}

// Crash-loop guard: the model that was loading or running when the worker died is named, and is not
// loaded again blindly (never after a crash during its own load; once after a crash while it ran).
const crashGuard = new CrashGuard();

/**
 * The model involved when the worker died during `action`, and whether it may be loaded again. Only the actions
 * that run the model (www/protocol.js, `model`) blame it: a crash in the BPE workbench, the masks or the self-test
 * reloads the model as before.
 */
function crashCulprit(action) {
  if (!runsModel(action)) return null;
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
    trainView.reset();
    masks.refresh(); // redraw from the inputs as they are now: nothing typed is lost
    gen.setReady(false); // until a model is loaded again
    if (state.model) {
      const { source, meta } = state.model;
      coreReady.then(() => loadSource(source, meta, { reload: true }));
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
  // Without a GPU there is nothing to choose: the control shows the one path there is, not "the faster path".
  const runOn = $('model-backend');
  runOn.disabled = !info.gpu?.ok;
  if (!info.gpu?.ok) runOn.value = 'cpu';
  runOn.title = info.gpu?.ok ? '' : 'Without WebGPU the CPU path is the only one';
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
    modelView.showError(`Could not load ${entry.name ?? entry.file}: ${sentence(err.message)}` + stillLoaded());
    return;
  }
  state.loading = false;
  await loadSource({ bytes }, { id: entry.id, name: entry.name ?? entry.id, description: entry.description, prompt: entry.prompt, task: entry.task,
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
  await loadSource({ bytes }, { id: file.name, name: file.name, source: '(your file)', description: '' });
}

/**
 * Files given together (picked or dropped): one .safetensors checkpoint of ours is read here as before; any other
 * set (a Hugging Face model's config.json, model.safetensors or shards + index, tokenizer.json, ...; llama2.c's
 * model.bin + tokenizer.bin) goes to the core as File objects, which it reads in slices with a progress bar, after
 * checking the memory budget against the config. The File objects stay here, so a restarted worker reads them again.
 */
async function loadFromFiles(files) {
  if (state.loading) return;
  if (files.length === 1 && /\.safetensors$/i.test(files[0].name)) return loadFromFile(files[0]);
  // A Hugging Face folder also holds files the core never reads (pytorch_model.bin, tf_model.h5, README.md...):
  // only the JSON and safetensors files go, so that the progress bar's total is what is read.
  if (files.some((f) => f.name === 'config.json')) files = files.filter((f) => /\.(json|safetensors)$/i.test(f.name));
  modelView.clearError();
  const weights = files.filter((f) => /\.(safetensors|bin)$/i.test(f.name) && f.name !== 'tokenizer.bin');
  const name = weights.length === 1 ? weights[0].name
    : weights.length > 1 ? `${weights[0].name} and ${weights.length - 1} more` : files.map((f) => f.name).join(', ');
  const id = `files:${files.map((f) => `${f.name}:${f.size}`).sort().join(',')}`;
  await loadSource({ files }, { id, name, source: `(your ${files.length} file${files.length === 1 ? '' : 's'})`,
    description: '', prompt: 'Once upon a time' });
}

/**
 * "Could not load NAME: why." A message about one of the files given (the core's start with its name, e.g.
 * "config.json: ...") names that file, not the weights file the model was named after.
 */
function loadError(meta, message) {
  const named = /^(?:checkpoint: )?(([\w.-]+\.(?:json|safetensors|bin))(?::| is\b| should\b).*)$/s.exec(message);
  if (named) { // the file's own words, without the core's "checkpoint:"
    const [, words, file] = named;
    if (file === meta.name && words.startsWith(`${file}:`)) return `Could not load ${file}: ${sentence(words.slice(file.length + 1).trim())}`;
    if (file !== meta.name && meta.source?.startsWith('(your')) return `Could not load the model from your files: ${sentence(words)}`;
  }
  return `Could not load ${meta.name}: ${sentence(message)}`;
}

function stillLoaded() {
  return state.model ? ` ${state.model.meta.name} is still loaded.` : '';
}

/** source: {bytes} (one checkpoint of ours) or {files} (File objects read by the core). */
async function loadSource(source, meta, { reload = false, switchBackend = false } = {}) {
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
    card = await loadOnBestPath(source, meta, Boolean(info?.gpu?.ok));
  } catch (err) {
    state.loading = false;
    state.loadingMeta = null;
    modelView.hideProgress();
    if (!(err instanceof WorkerDiedError)) modelView.showError(loadError(meta, err.message) + stillLoaded());
    gen.setReady(Boolean(state.model));
    return;
  }
  state.loading = false;
  state.loadingMeta = null;
  modelView.hideProgress();
  // A Hugging Face model's files are named after what they declare (model.safetensors says little).
  if (source.files && card.origin?.format === 'huggingface' && !meta.named) {
    Object.assign(meta, { name: `${card.origin.declared} (${meta.name})`, named: true });
  }
  const previous = state.model;
  state.model = { card, meta, source };
  modelView.showCard(card, meta);
  modelView.setCurrent(meta.id);
  gen.setModelName(meta.name);
  document.body.dataset.model = meta.id;
  const isEncDec = card.arch === 'encoder_decoder';
  gen.setMode(isEncDec ? 'source' : card.tokenizer ? 'text' : 'ids');
  if (!reload && !switchBackend) {
    prompt.chooseFor(card, meta, previous); // a prompt saved by "Reload the page" after a lost GPU comes back here
    gen.applySampling(meta.sampling, previous?.meta.sampling);
    state.run = null;
    state.step = null;
  }
  gen.setReady(true);
  showKvNote();
  if (!reload) clearStaleErrors(); // a reload after a worker restart keeps the lines that say what happened
  await analysis.analyze();
}

/** After a success (a model loaded, a generation done), the error lines of earlier failures are out of date. */
function clearStaleErrors() {
  modelView.clearError();
  if (!gen.running) gen.clearError();
}

/** Loads the model where "Run on" says (auto: measured on both paths, the faster kept; www/speed.js). */
async function loadOnBestPath(source, meta, gpuOk) {
  const choice = gpuOk ? $('model-backend').value : 'only'; // without WebGPU nobody chose the CPU path: it is the only one
  const names = { gpu: 'WebGPU', cpu: 'the CPU path' };
  const { card, results, chosen } = await loadOnFasterPath({
    call, source, meta, gpuOk, choice, measured: state.speed[meta.id],
    onProgress: (path, read, total) => modelView.showProgress(`Reading ${meta.name} for ${names[path]}`, read, total),
    onMeasuring: (text) => modelView.showPreparing(`${meta.name}: ${text}`),
  });
  state.speed[meta.id] = results;
  device.showSpeed({ model: meta.name, results, chosen, choice, summary: speedSummary(results, chosen, choice) });
  document.body.dataset.backend = card.backend;
  return card;
}

/** The KV-cache note under Generate: why uncached generation is slow, with the cost for the current prompt. */
function showKvNote() {
  const card = state.model?.card;
  const { kvCache, sliding, maxNew } = gen.cacheSettings();
  gen.showKvNote(card && !kvCache ? kvNote(card, { promptLen: state.lastPromptLen ?? 0, maxNew, sliding }) : null);
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
  const input = await validateGeneration(keepLast);
  if (!input) return;
  const streamed = await streamGeneration(input);
  if (streamed) await finishGeneration(input, streamed);
}

/**
 * What the generation starts from: {opts (the Generate view's options), enc (the prompt as the core reads it),
 * card, isEncDec}, or null after the Generate view says why it cannot start.
 */
async function validateGeneration(keepLast) {
  gen.clearError();
  const { opts, error } = gen.readOptions();
  if (error) return refuse(error);
  if (keepLast) {
    gen.setSlidingWindow(true);
    opts.sliding_window = true;
  }
  const card = state.model.card;
  const isEncDec = card.arch === 'encoder_decoder';
  let enc;
  try {
    enc = await prompt.encode();
  } catch (err) {
    return refuse(err.message);
  }
  if (!enc.ids.length) return refuse(isEncDec ? 'Type a date (or any sentence) to translate first.' : 'Type a prompt first.');
  if (!enc.fits) {
    return refuse(`The source has ${count(enc.ids.length, 'token')} but the model\u2019s context is ${enc.context}.`);
  }
  if (!enc.room && !opts.sliding_window) {
    return refuse(`The prompt has ${count(enc.ids.length, 'token')} and the model\u2019s context is ${enc.context}: ` +
      'there is no room for a new token. Shorten the prompt, or', {
      id: 'gen-keep-last',
      label: `Keep the last ${count(enc.keep_last, 'token')}`,
      onClick: () => generate({ keepLast: true }),
    });
  }
  return { opts, enc, card, isEncDec };
}

/** The Generate view says why the generation cannot start (gen.showError's arguments): null, no input. */
function refuse(...why) {
  gen.showError(...why);
  return null;
}

/**
 * Starts the run (state.run; the views wait for its analysis) and streams its tokens from the worker into it.
 * Resolves {run, result (the worker's answer), t0, tFirst, tokenMessages (the 'tokens' events seen)}, or null when
 * the generation failed (said in the Generate view; the prompt is analysed again).
 */
async function streamGeneration(input) {
  const { opts, enc, isEncDec } = input;
  const promptText = prompt.text();
  tokens.show(enc, promptText, { title: isEncDec ? 'Source' : 'Prompt' });
  analysis.cancel(); // an analysis still in flight must not draw over the generation
  const run = {
    src: enc.ids, srcPieces: enc.pieces, promptCut: 0, gen: [], pieces: [], texts: [], tops: [], windows: [],
    stopped: false, reason: null,
  };
  state.run = run;
  state.step = null;
  state.analysis = null; // the views wait for this run's analysis: nothing stale is drawn or selected
  document.body.dataset.step = '';
  analysis.wait('Generating\u2026 this view shows every step once the generation ends and its analysis lands.', 'generating');
  gen.begin({ promptText, isSource: isEncDec });
  // While tokens stream, the views off screen are not laid out or painted (style.css, body[data-generating]):
  // the output grows every frame and moved everything below it, which the browser repainted, the whole page
  // at each frame (50-100 ms tasks at 390 px on 2 cores, tests/browser/stream.test.mjs).
  document.body.dataset.generating = '';
  const t0 = performance.now();
  let tFirst = null;
  let tLast = null;
  // Tokens arrive from the worker in batches (at most one message per ~16 ms, www/worker.js); their data goes
  // into `run` at once, and the output is drawn at most once per animation frame, the whole backlog appended.
  let undrawn = [];
  let frame = null;
  let tokenMessages = 0;
  const draw = () => {
    if (frame !== null) cancelAnimationFrame(frame);
    frame = null;
    if (!undrawn.length) return;
    for (const step of undrawn) gen.addToken(step);
    undrawn = [];
    gen.followNewest();
    const n = run.gen.length;
    showGenStats(input, n, tFirst - t0, n >= 2 && tLast > tFirst ? (n - 1) / ((tLast - tFirst) / 1000) : null);
  };
  let result;
  try {
    result = await core.call('generate', { ids: enc.ids, opts: { ...opts, top: 10, attention: false } }, {
      onEvent: (ev) => {
        if (ev.kind === 'start' && !isEncDec && ev.ids.length < enc.ids.length) {
          // The sliding window cut the prompt to its newest tokens: the model never reads the others.
          run.promptCut = enc.ids.length - ev.ids.length;
          run.src = enc.ids.slice(run.promptCut);
          run.srcPieces = enc.pieces.slice(run.promptCut);
          tokens.show(enc, promptText, { title: 'Prompt', cut: run.promptCut });
        }
        if (ev.kind !== 'tokens' || !ev.steps.length) return;
        const now = performance.now();
        tFirst ??= now;
        tLast = now;
        tokenMessages++;
        for (const step of ev.steps) {
          run.gen.push(step.id);
          run.pieces.push(step.piece);
          run.texts.push(step.text);
          run.tops.push(step.top ?? null);
          run.windows.push(step.window_start ?? 0);
          undrawn.push(step);
        }
        frame ??= requestAnimationFrame(draw);
      },
    });
  } catch (err) {
    draw(); // the tokens that arrived before the failure
    delete document.body.dataset.generating;
    gen.finish({ state: 'error' });
    gen.showError(err instanceof WorkerDiedError
      ? `The compute worker stopped during generation (${err.reason}). It was restarted; your prompt is kept.`
      : `Generation failed: ${err.message}`);
    analysis.analyze();
    return null;
  }
  draw(); // the last batch, before the end is shown
  delete document.body.dataset.generating;
  return { run, result, t0, tFirst, tokenMessages };
}

/** A generation that ended (or was stopped): its text and end shown, then one analysis of every step. */
async function finishGeneration(input, { run, result, t0, tFirst, tokenMessages }) {
  const { card } = input;
  // How the tokens came (test hook, tests/browser/stream.test.mjs): messages the worker posted and the page got.
  document.body.dataset.genTokenMessages = String(result.tokenMessages ?? tokenMessages);
  document.body.dataset.genTokenMessagesSeen = String(tokenMessages);
  run.stopped = result.stopped;
  run.reason = result.stopped ? 'stopped' : result.reason ?? null;
  document.body.dataset.tokensPerSubmit = String(result.tokensPerSubmit ?? 1); // largest K used (www/worker.js)
  let text = run.texts.join('') + (result.text ?? '');
  if (card.tokenizer) {
    try {
      text = await core.call('decode', { ids: run.gen });
    } catch { /* keep the streamed text */ }
  }
  const n = run.gen.length;
  if (n > 0) analysis.wait(`Analysing the ${n} generated token${n === 1 ? '' : 's'}\u2026 (one forward pass over the whole sequence)`, 'analysing');
  gen.finish({ state: result.stopped ? 'stopped' : 'done', text, reason: run.reason, note: endNote(run, card.context) });
  clearStaleErrors();
  const total = (performance.now() - t0) / 1000;
  showGenStats(input, n, tFirst != null ? tFirst - t0 : null, n >= 2 ? (n - 1) / ((performance.now() - tFirst) / 1000) : n / total);
  if (n > 0) {
    await analysis.run({ src: run.src, srcPieces: run.srcPieces, gen: run.gen, genPieces: run.pieces, tops: run.tops });
  } else {
    await analysis.analyze();
  }
}

/** The Generate view's stats line: `count` tokens, the time to the first one, tokens per second. */
function showGenStats({ opts, card }, count, ttftMs, tps) {
  gen.setStats({ count, ttftMs, tps, backend: card.backend, kvCache: opts.kv_cache });
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
  call: (type, args) => call(type, args),
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
coreReady.then((info) => { if (info) trainView.ready(); });
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
