// The page's UI state and the plumbing to the compute worker (www/worker.js, which runs the wasm core).
// Views (www/views/*.js) only draw what they are given; this file decides what to ask the core and when.
//
// Test hooks (documented for tests/browser/):
//   ?nogpu=1           hide WebGPU in the page and in the worker: the "WebGPU not available" path on any browser
//   ?noselftest=1      do not run the self-test automatically on load (the button still works)
//   window.tinyformer  {call(type, args), crashWorker(mode), state}: drive the worker from the console or a test
import { createDeviceView } from './views/device.js';
import { createSelftestView } from './views/selftest.js';
import { createMasksView } from './views/masks.js';

const params = new URLSearchParams(location.search);
const NO_GPU = params.get('nogpu') === '1';
const AUTO_SELFTEST = params.get('noselftest') !== '1';

if (NO_GPU) {
  try {
    Object.defineProperty(Navigator.prototype, 'gpu', { value: undefined, configurable: true });
    Object.defineProperty(navigator, 'gpu', { value: undefined, configurable: true });
  } catch { /* best effort: the worker is what matters */ }
}

// ---------------------------------------------------------------------------------------------------------
// CoreWorker: request/response over postMessage, with restart when the worker dies.

class WorkerDiedError extends Error {
  constructor(reason) {
    super(`the compute worker stopped: ${reason}`);
    this.name = 'WorkerDiedError';
    this.reason = reason;
  }
}

const RESTART_LIMIT = 3;          // restarts allowed ...
const RESTART_WINDOW_MS = 60_000; // ... within this window, then we give up and ask for a reload

class CoreWorker {
  constructor({ onRestart, onGiveUp }) {
    this.onRestart = onRestart;
    this.onGiveUp = onGiveUp;
    this.nextId = 1;
    this.pending = new Map(); // id -> {resolve, reject, type}
    this.restarts = [];       // timestamps of recent restarts
    this.generation = 0;      // bumps on every (re)start; stale events from an old worker are ignored
    this.dead = false;
    this.spawn();
  }

  spawn() {
    const url = new URL('./worker.js', import.meta.url);
    if (NO_GPU) url.searchParams.set('nogpu', '1');
    const generation = ++this.generation;
    const worker = new Worker(url, { type: 'module', name: 'tinyformer-core' });
    worker.addEventListener('message', (e) => generation === this.generation && this.onMessage(e.data));
    worker.addEventListener('error', (e) => {
      e.preventDefault();
      if (generation === this.generation) {
        this.died(e.message || 'the worker script failed to load or threw an error it did not catch');
      }
    });
    worker.addEventListener('messageerror', () => generation === this.generation && this.died('a message could not be decoded'));
    this.worker = worker;
  }

  onMessage(msg) {
    if (msg?.type === 'ready') return;
    if (msg?.type === 'fatal') return this.died(msg.error);
    const entry = this.pending.get(msg?.id);
    if (!entry) return;
    this.pending.delete(msg.id);
    if (msg.ok) entry.resolve(msg.result);
    else if (msg.fatal) {
      entry.reject(new WorkerDiedError(msg.error));
      this.died(msg.error);
    } else entry.reject(new Error(msg.error));
  }

  /** Sends {id, type, ...args}; resolves with the result or rejects with the core's error message. */
  call(type, args = {}) {
    if (this.dead) return Promise.reject(new Error('the compute worker stopped too often; reload the page'));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, type });
      this.worker.postMessage({ id, type, ...args });
    });
  }

  died(reason) {
    this.generation++; // ignore anything else the dead worker says
    this.worker.terminate();
    const err = new WorkerDiedError(reason);
    for (const { reject } of this.pending.values()) reject(err);
    this.pending.clear();
    const now = Date.now();
    this.restarts = this.restarts.filter((t) => now - t < RESTART_WINDOW_MS);
    if (this.restarts.length >= RESTART_LIMIT) {
      this.dead = true;
      this.onGiveUp?.(reason);
      return;
    }
    this.restarts.push(now);
    this.spawn();
    this.onRestart?.(reason);
  }
}

// ---------------------------------------------------------------------------------------------------------
// UI state

const state = {
  core: null,           // {version, gpu, hasNavigatorGpu} from the worker's 'init'
  selftestRunning: false,
};

const noticeEl = document.getElementById('worker-notice');
const versionEl = document.getElementById('core-version');

function showNotice(text, { kind = 'warning' } = {}) {
  noticeEl.replaceChildren();
  const p = document.createElement('p');
  p.textContent = text;
  const close = document.createElement('button');
  close.type = 'button';
  close.className = 'notice-close';
  close.textContent = 'Dismiss';
  close.addEventListener('click', () => { noticeEl.hidden = true; });
  noticeEl.append(p, close);
  noticeEl.dataset.kind = kind;
  noticeEl.hidden = false;
}

const device = createDeviceView(document.getElementById('device-status'));
const selftest = createSelftestView({
  button: document.getElementById('selftest-run'),
  summary: document.getElementById('selftest-summary'),
  table: document.getElementById('selftest-table'),
  onRun: () => runSelftest(),
});
const masks = createMasksView({
  form: document.getElementById('masks-form'),
  grid: document.getElementById('masks-grid'),
  errorEl: document.getElementById('masks-error'),
  request: (args) => core.call('masks', args),
});

const core = new CoreWorker({
  onRestart: (reason) => {
    showNotice(`The compute worker stopped (${reason}) and was restarted. Your inputs are kept.`);
    document.body.dataset.workerRestarts = String(Number(document.body.dataset.workerRestarts ?? 0) + 1);
    initCore({ afterRestart: true });
    masks.refresh(); // redraw from the inputs as they are now: nothing typed is lost
  },
  onGiveUp: (reason) => {
    showNotice(`The compute worker stopped again (${reason}). It stopped ${RESTART_LIMIT} times within a minute, ` +
      'so it was not restarted: reload the page to try again. Your inputs are still on the page.', { kind: 'error' });
    device.showError('The compute worker is not running.');
    selftest.setUnavailable('The compute worker is not running; reload the page.');
  },
});

async function initCore({ afterRestart = false } = {}) {
  device.showLoading();
  let info;
  try {
    info = await core.call('init');
  } catch (err) {
    if (err instanceof WorkerDiedError) return; // the restart handler takes over
    versionEl.textContent = 'not loaded';
    versionEl.dataset.state = 'error';
    device.showError(err.message);
    selftest.setUnavailable('The wasm core did not load, so the self-test cannot run.');
    return;
  }
  state.core = info;
  versionEl.textContent = info.version;
  versionEl.dataset.state = 'ready';
  device.show(info);
  if (info.gpu?.ok) {
    selftest.setReady();
    if (AUTO_SELFTEST && !afterRestart) runSelftest();
  } else {
    selftest.setUnavailable('The self-test needs WebGPU, which this browser does not provide (see "About this device").');
  }
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

// Console / test access. Read-only state plus two actions; nothing here is needed by the page itself.
window.tinyformer = {
  call: (type, args) => core.call(type, args),
  crashWorker: (mode = 'panic') => core.call('crash', { mode }).catch((e) => e.message),
  get state() { return structuredClone(state); },
};

initCore();
masks.refresh(); // masks need only the wasm core, not the GPU: ask at once
