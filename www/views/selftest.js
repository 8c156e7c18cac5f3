// "Kernel self-test": runs core.run_selftest() (every WGSL kernel against its CPU twin, on this GPU) and
// shows one row per check.
//
// State for tests lives on #selftest-summary:
//   data-state  "idle" | "ready" | "running" | "done" | "error" | "unavailable"
//   data-passed, data-failed, data-total (when done)
// and on each result row: <tr data-check="name" data-ok="true|false" data-max-abs-diff="…">.
import { h, replaceChildren } from '../dom.js';

export function createSelftestView({ button, summary, table, onRun }) {
  const tbody = table.querySelector('tbody');
  button.addEventListener('click', () => onRun());

  function setSummary(stateName, text, extra = {}) {
    summary.dataset.state = stateName;
    for (const key of ['passed', 'failed', 'total', 'ms']) delete summary.dataset[key];
    Object.assign(summary.dataset, extra);
    summary.className = `summary summary-${stateName}`;
    summary.textContent = text;
  }

  return {
    setReady() {
      button.disabled = false;
      if (summary.dataset.state === 'idle' || summary.dataset.state === 'unavailable') {
        setSummary('ready', 'Ready: press the button to run every check.');
      }
    },

    setUnavailable(reason) {
      button.disabled = true;
      setSummary('unavailable', reason);
    },

    setRunning() {
      button.disabled = true;
      button.setAttribute('aria-busy', 'true');
      setSummary('running', 'Running every kernel on the GPU and on the CPU… (this can take a while on a software GPU)');
    },

    setResults(results, elapsedMs) {
      button.disabled = false;
      button.removeAttribute('aria-busy');
      const list = Array.isArray(results) ? results : [];
      const passed = list.filter((r) => r.ok === true).length;
      const failed = list.length - passed;
      replaceChildren(tbody, list.map(resultRow));
      table.hidden = list.length === 0;
      const text = list.length === 0
        ? 'The core reported no checks.'
        : `${passed} passed, ${failed} failed (${(elapsedMs / 1000).toFixed(1)} s)`;
      setSummary(list.length === 0 ? 'error' : 'done', text, {
        passed: String(passed),
        failed: String(failed),
        total: String(list.length),
        ms: String(Math.round(elapsedMs)),
      });
    },

    setError(message) {
      button.disabled = false;
      button.removeAttribute('aria-busy');
      setSummary('error', message);
    },
  };
}

function resultRow(r) {
  const ok = r.ok === true;
  return h('tr', {
    class: ok ? 'pass' : 'fail',
    dataset: { check: r.name, ok: String(ok), maxAbsDiff: r.max_abs_diff },
  },
  h('th', { scope: 'row', class: 'check' }, checkName(r.name)),
  h('td', { class: 'result' }, h('span', { class: `badge ${ok ? 'badge-ok' : 'badge-error'}` }, ok ? 'pass' : 'FAIL')),
  h('td', { class: 'num', dataset: { label: 'max |diff|' } }, formatDiff(r.max_abs_diff)),
  h('td', { class: 'tol', dataset: { label: 'tolerance' } }, r.tolerance ?? ''),
  h('td', { class: 'num', dataset: { label: 'time' } }, formatMs(r.ms)),
  h('td', { class: 'detail' }, r.detail ?? ''));
}

// "elementwise (relu, gelu, silu)" -> the family name, with what it covers on a second, quieter line.
function checkName(name) {
  const m = /^(.*?)\s*\((.+)\)$/.exec(String(name ?? ''));
  if (!m) return h('span', { class: 'check-name' }, String(name ?? ''));
  return [h('span', { class: 'check-name' }, m[1]), h('span', { class: 'check-covers' }, m[2])];
}

function formatMs(ms) {
  if (typeof ms !== 'number' || !Number.isFinite(ms)) return '';
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(ms < 10 ? 1 : 0)} ms`;
}

function formatDiff(x) {
  if (typeof x !== 'number') return String(x ?? '');
  if (Number.isNaN(x)) return 'NaN';
  if (x === 0) return '0';
  return x.toExponential(2);
}
