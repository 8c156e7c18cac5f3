// "About this device": the WebGPU adapter and its key limits, or a plain-language reason why there is none.
//
// State for tests lives on the container (#device-status):
//   data-state   "loading" | "ready" | "error"
//   data-backend "webgpu" | "none" (what the core's gpu_init reported; empty while loading)
//   data-reason  "ok" | "no-webgpu" (navigator.gpu missing) | "no-adapter" (WebGPU present, no adapter/device)
//   #device-speed  the measured speed of the loaded model on each path: data-model, data-chosen ("gpu" | "cpu"),
//                  data-choice ("auto" | "gpu" | "cpu": what "Run on" says; "only": no WebGPU, the CPU path is the only
//                  one); tr[data-path][data-tps] one per measured path
import { h, replaceChildren, formatBytes, formatInt } from '../dom.js';

// [core field, label, the browser's GPUAdapterInfo field used when the core leaves it empty]
const ADAPTER_FIELDS = [
  ['name', 'Name', 'description'],
  ['vendor', 'Vendor', 'vendor'],
  ['architecture', 'Architecture', 'architecture'],
  ['device_type', 'Device type', null],
  ['backend', 'Backend', null],
  ['driver', 'Driver', null],
];

const LIMIT_FIELDS = [
  ['max_storage_buffer_binding_size', 'Largest storage buffer binding', formatBytes],
  ['max_buffer_size', 'Largest buffer', formatBytes],
  ['max_compute_workgroup_storage_size', 'Workgroup shared memory', formatBytes],
  ['max_compute_invocations_per_workgroup', 'Threads per workgroup', formatInt],
  ['max_compute_workgroups_per_dimension', 'Workgroups per dimension', formatInt],
];

export function createDeviceView(root) {
  // The speed section outlives redraws of the adapter report (a worker restart redraws it).
  const speedEl = h('section', { id: 'device-speed', class: 'device-speed', 'aria-label': 'Measured speed', hidden: true });

  function setState(stateName, backend = '', reason = '') {
    root.dataset.state = stateName;
    root.dataset.backend = backend;
    root.dataset.reason = reason;
  }

  return {
    showLoading() {
      setState('loading');
      replaceChildren(root, h('p', { class: 'muted' }, 'Looking for a WebGPU adapter…'));
    },

    /** info: {version, isa (the build: simd128 or simd128+relaxed-simd), gpu: gpu_init() result, hasNavigatorGpu} */
    show(info) {
      const gpu = info.gpu ?? { ok: false, backend: 'none', error: 'the core gave no GPU report' };
      if (gpu.ok) {
        setState('ready', gpu.backend ?? 'webgpu', 'ok');
        replaceChildren(root,
          h('p', { class: 'status status-ok', id: 'device-message' },
            h('span', { class: 'badge badge-ok' }, 'WebGPU'),
            ' The WGSL kernels can run on this adapter (the self-test does). A model runs where \u201cRun on\u201d says: by default the faster path, measured below.'),
          adapterTable(gpu.adapter ?? {}, info.browserAdapter ?? {}),
          limitsTable(gpu.limits ?? {}),
          h('p', { class: 'muted small', id: 'core-build' }, `wasm core ${info.version}, ${info.isa} build`),
          speedEl);
        return;
      }
      const noWebGpu = info.hasNavigatorGpu === false;
      setState('ready', gpu.backend ?? 'none', noWebGpu ? 'no-webgpu' : 'no-adapter');
      const headline = noWebGpu
        ? 'WebGPU is not available in this browser, so the GPU kernels cannot run here.'
        : 'WebGPU is available, but no GPU adapter was found, so the GPU kernels cannot run here.';
      const advice = noWebGpu
        ? 'Try a recent Chrome or Edge, or enable WebGPU in your browser\u2019s settings. '
        : 'The browser may have blocked your GPU or its driver; try another browser or update the driver. ';
      replaceChildren(root,
        h('p', { class: 'status status-warn', id: 'device-message' },
          h('span', { class: 'badge badge-warn' }, 'No GPU'), ' ', headline),
        h('p', { id: 'device-advice' }, advice, 'Every view still works: the models run on the CPU path of the same Rust core ' +
          '(WebAssembly), which is the only path here, so \u201cRun on\u201d has nothing to choose. Only the kernel self-test needs WebGPU.'),
        gpu.error ? h('p', { class: 'muted small' }, 'Details: ', h('code', {}, gpu.error)) : null,
        h('p', { class: 'muted small', id: 'core-build' }, `wasm core ${info.version}, ${info.isa} build`),
        speedEl);
    },

    /**
     * The probe's figures (www/speed.js): {model, results: {gpu?, cpu?, errors}, chosen, choice, summary}.
     * Both figures are shown with the path in use; "Run on" in the Model view overrides the choice.
     */
    showSpeed({ model, results, chosen, choice, summary }) {
      speedEl.hidden = false;
      speedEl.dataset.model = model;
      speedEl.dataset.chosen = chosen;
      speedEl.dataset.choice = choice;
      const names = { gpu: 'WebGPU', cpu: 'CPU path (WebAssembly)' };
      const rows = ['gpu', 'cpu'].filter((p) => results[p] || results.errors?.[p]).map((p) => {
        const r = results[p];
        return h('tr', { dataset: { path: p, tps: r?.tps != null ? r.tps.toFixed(2) : null }, class: p === chosen ? 'chosen' : null },
          h('th', { scope: 'row' }, names[p]),
          h('td', {}, r?.tps != null ? `${r.tps.toFixed(1)} tokens/s` : `failed: ${results.errors?.[p] ?? 'no rate (fewer than 2 tokens)'}`),
          h('td', {}, p === chosen ? h('span', { class: 'badge badge-ok' }, 'in use') : null));
      });
      replaceChildren(speedEl,
        h('h3', { class: 'subhead' }, `Speed of ${model} on this device`),
        h('table', { class: 'kv', id: 'device-speed-table' },
          h('caption', {}, 'Greedy decoding with the KV cache, measured when the model loaded'),
          h('tbody', {}, rows)),
        h('p', { class: 'small', id: 'device-speed-summary' }, summary),
        // Without WebGPU the summary says the CPU path is the only one: there is no choice to explain.
        choice === 'only' ? null : h('p', { class: 'muted small', id: 'device-speed-choice' }, choice === 'auto'
          ? 'The page measured both and uses the faster. To choose yourself, set \u201cRun on\u201d in the Model view.'
          : 'You chose this path in \u201cRun on\u201d (Model view); set it to \u201cthe faster path, measured here\u201d to let the page choose.'));
    },

    showError(message) {
      setState('error', 'none', 'error');
      replaceChildren(root,
        h('p', { class: 'status status-error', id: 'device-message' },
          h('span', { class: 'badge badge-error' }, 'Error'), ' ', message));
    },
  };
}

function adapterTable(adapter, browser) {
  let usedBrowser = false;
  const rows = ADAPTER_FIELDS.map(([key, label, browserKey]) => {
    let value = adapter[key];
    let fromBrowser = false;
    if ((value === '' || value == null) && browserKey && browser[browserKey]) {
      value = browser[browserKey];
      fromBrowser = usedBrowser = true;
    }
    return h('tr', { dataset: { field: key, source: fromBrowser ? 'browser' : 'core' } },
      h('th', { scope: 'row' }, label),
      h('td', {},
        value === '' || value == null ? h('span', { class: 'muted' }, 'not reported') : String(value),
        fromBrowser ? h('sup', { class: 'muted', title: 'reported by the browser, not by wgpu' }, ' *') : null));
  });
  return [
    h('table', { class: 'kv', id: 'device-adapter' },
      h('caption', {}, 'Adapter'),
      h('tbody', {}, rows)),
    usedBrowser ? h('p', { class: 'muted small' }, '* as the browser reports it (GPUAdapterInfo); wgpu leaves it empty.') : null,
  ];
}

function limitsTable(limits) {
  const rows = LIMIT_FIELDS.filter(([key]) => key in limits).map(([key, label, fmt]) =>
    h('tr', { dataset: { limit: key, value: limits[key] } },
      h('th', { scope: 'row' }, label),
      h('td', { title: `${key} = ${formatInt(limits[key])}` }, fmt(limits[key]))));
  return h('table', { class: 'kv', id: 'device-limits' },
    h('caption', {}, 'Key limits'),
    h('tbody', {}, rows));
}
