// The page's side of the compute worker (www/worker.js): request/response over postMessage, streaming
// events for long requests, and a restart when the worker dies (a wasm panic, an uncaught error).

export class WorkerDiedError extends Error {
  constructor(reason) {
    super(`the compute worker stopped: ${reason}`);
    this.name = 'WorkerDiedError';
    this.reason = reason;
  }
}

export const RESTART_LIMIT = 3;          // restarts allowed ...
const RESTART_WINDOW_MS = 60_000; // ... within this window, then we give up and ask for a reload

export class CoreWorker {
  constructor({ onRestart, onGiveUp, onGpuLost, noGpu = false }) {
    this.noGpu = noGpu;
    this.onGpuLost = onGpuLost;
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
    if (this.noGpu) url.searchParams.set('nogpu', '1');
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
    if (msg.event !== undefined) {
      entry.onEvent?.(msg.event);
      return;
    }
    this.pending.delete(msg.id);
    if (msg.ok) entry.resolve(msg.result);
    else if (msg.fatal) {
      entry.reject(new WorkerDiedError(msg.error));
      this.died(msg.error);
    } else {
      // A lost GPU device cannot come back in this page: every later GPU call would fail the same way.
      if (/GPU device was lost|device (is )?(lost|destroyed)/i.test(msg.error ?? '')) this.onGpuLost?.(msg.error);
      entry.reject(new Error(msg.error));
    }
  }

  /**
   * Sends {id, type, ...args}; resolves with the result or rejects with the core's error message.
   * onEvent receives the request's streaming events (generation tokens). transfer: ArrayBuffers to move.
   */
  call(type, args = {}, { onEvent, transfer } = {}) {
    if (this.dead) return Promise.reject(new Error('the compute worker stopped too often; reload the page'));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, type, onEvent });
      this.worker.postMessage({ id, type, ...args }, transfer ?? []);
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

