// The page's side of the compute worker (www/worker.js): request/response over postMessage, streaming
// events for long requests, and a restart when the worker dies (a wasm panic, an uncaught error) or when a
// call runs past its time limit (the watchdog: a call that never returns would freeze the core for good).
//
// Watchdog: every call has a limit by action (www/protocol.js, which declares the actions and their messages).
// A queued model call's clock starts when the worker starts it (its {started} event), not while it waits behind
// another; an action whose limit is per event (a generation: per token) restarts its clock at every event.
// Past the limit the worker is terminated and restarted, the call rejects with a WorkerTimeoutError that names
// the action, and onRestart hears which action it was.
// Test hook: setTestLimit(action, ms) gives the next call of that action a shorter limit (once; it can only
// shorten), so a test need not wait minutes.
//
// CrashGuard remembers which model was involved in each crash, so that a restart does not reload a model
// that just crashed the worker (see app.js's onRestart).
import { describeAction, isQueued, limitFor, limitPerEvent } from './protocol.js';

export class WorkerDiedError extends Error {
  constructor(reason) {
    super(`the compute worker stopped: ${reason}`);
    this.name = 'WorkerDiedError';
    this.reason = reason;
  }
}

/** A call ran past its limit: the worker was stopped. `action` is the request type, `limitMs` its limit. */
export class WorkerTimeoutError extends WorkerDiedError {
  constructor(action, limitMs) {
    super(`${describeAction(action)} took longer than ${formatLimit(limitMs)}, so the worker was stopped ` +
      '(it may be too heavy for this device)');
    this.name = 'WorkerTimeoutError';
    this.action = action;
    this.limitMs = limitMs;
  }
}

function formatLimit(ms) {
  return ms >= 1000 ? `${Math.round(ms / 100) / 10} s` : `${ms} ms`;
}

export const RESTART_LIMIT = 3;          // restarts allowed ...
const RESTART_WINDOW_MS = 60_000; // ... within this window, then we give up and ask for a reload

/**
 * Which model crashed the worker, and whether a restart may load it again. A model that was being loaded
 * when the worker died is never reloaded by itself; a model that was running is reloaded once, and not
 * after it crashed a second time. The user can always load it again by hand (forgive()).
 */
export class CrashGuard {
  constructor({ maxReloads = 1 } = {}) {
    this.maxReloads = maxReloads;
    this.crashes = new Map(); // model id -> crashes
  }

  /** Records a crash with `modelId` involved during `action`; returns {count, reload}. */
  record(modelId, action) {
    const count = (this.crashes.get(modelId) ?? 0) + 1;
    this.crashes.set(modelId, count);
    return { count, reload: action !== 'load' && count <= this.maxReloads };
  }

  crashCount(modelId) {
    return this.crashes.get(modelId) ?? 0;
  }

  /** The user chose to load it again. */
  forgive(modelId) {
    this.crashes.delete(modelId);
  }
}

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
    this.running = null;      // the queued call the worker is running now
    this.testLimits = new Map(); // action -> ms, for the next call of that action (test hook)
    this.spawn();
  }

  spawn() {
    const url = new URL('./worker.js', import.meta.url);
    if (this.noGpu) url.searchParams.set('nogpu', '1');
    // the page's ?maxbinding= test hook goes on to the worker (www/worker.js)
    const maxBinding = new URLSearchParams(globalThis.location?.search ?? '').get('maxbinding');
    if (maxBinding) url.searchParams.set('maxbinding', maxBinding);
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
    if (msg?.type === 'fatal') return this.died(msg.error, { action: this.running?.type });
    const entry = this.pending.get(msg?.id);
    if (!entry) return;
    if (msg.started) {
      // A queued call begins now: its clock starts.
      this.running = entry;
      this.arm(msg.id, entry);
      return;
    }
    if (msg.event !== undefined) {
      // the limit is per token, and for a load from files per stretch without progress
      if (limitPerEvent(entry.type)) this.arm(msg.id, entry);
      entry.onEvent?.(msg.event);
      return;
    }
    this.disarm(entry);
    if (this.running === entry) this.running = null;
    this.pending.delete(msg.id);
    if (msg.ok) entry.resolve(msg.result);
    else if (msg.fatal) {
      entry.reject(new WorkerDiedError(msg.error));
      this.died(msg.error, { action: entry.type });
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
      const entry = { resolve, reject, type, onEvent, timer: null, limit: undefined };
      this.pending.set(id, entry);
      this.worker.postMessage({ id, type, ...args }, transfer ?? []);
      // Calls the worker answers at once start their clock now; queued model calls on {started}.
      if (!isQueued(type)) this.arm(id, entry);
    });
  }

  /** Test hook: the next call of `action` gets min(its limit, ms). */
  setTestLimit(action, ms) {
    this.testLimits.set(action, Number(ms));
  }

  /** (Re)starts the watchdog of one call. */
  arm(id, entry) {
    this.disarm(entry);
    if (entry.limit === undefined) {
      const test = this.testLimits.get(entry.type);
      this.testLimits.delete(entry.type);
      entry.limit = Math.min(limitFor(entry.type), test > 0 ? test : Infinity);
    }
    const limit = entry.limit;
    const generation = this.generation;
    entry.timer = setTimeout(() => {
      if (generation !== this.generation || !this.pending.has(id)) return;
      const err = new WorkerTimeoutError(entry.type, limit);
      this.pending.delete(id);
      entry.reject(err);
      this.died(err.reason, { action: entry.type, timedOut: true });
    }, limit);
  }

  disarm(entry) {
    if (entry.timer !== null) clearTimeout(entry.timer);
    entry.timer = null;
  }

  /**
   * The worker is gone (or stopped by the watchdog): reject what was pending, then restart it unless it
   * died too often. info: {action (the request type that was running, if known), timedOut}.
   */
  died(reason, info = {}) {
    this.generation++; // ignore anything else the dead worker says
    this.worker.terminate();
    this.running = null;
    const err = new WorkerDiedError(reason);
    for (const entry of this.pending.values()) {
      this.disarm(entry);
      entry.reject(err);
    }
    this.pending.clear();
    const now = Date.now();
    this.restarts = this.restarts.filter((t) => now - t < RESTART_WINDOW_MS);
    if (this.restarts.length >= RESTART_LIMIT) {
      this.dead = true;
      this.onGiveUp?.(reason, info);
      return;
    }
    this.restarts.push(now);
    this.spawn();
    this.onRestart?.(reason, info);
  }
}

