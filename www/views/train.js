// The training lab: pick a preset (an induction-head toy or character-level Shakespeare), change its sizes, see
// the memory the run needs, then Train / Pause / Resume / Stop and watch the loss fall and the induction score
// rise. The run lives in the worker (www/protocol.js `train*` actions, src/train/lab.rs); this view draws what
// the core reports and emits its requests through `request` (app.js wires it to the worker).
//
// State for tests, on #train-status: data-state (idle | running | paused | done | error), data-step, data-loss,
// data-val-loss, data-tokens-per-s, data-induction (the largest induction score among the last layer's heads,
// as last measured), data-loss-100 (the loss of step 100's batch, once step 100 is done), data-loss-first (step
// 1's), data-backend
// ('gpu' | 'cpu'). #train-memory[data-total] (bytes) shows the plan before a run; #train-cli its CLI command.
import { h, replaceChildren, formatBytes, formatInt } from '../dom.js';
import { drawThumbnail } from './heatmap.js';

// inductionEvery: how often (steps) the model is probed (train::lab::probe: head scores, the probe's attention, a
// sample, the experts' load, the dates accuracy).
const TEXT_FIELDS = ['layers', 'heads', 'dim', 'context', 'batch', 'lr', 'steps', 'seed'];
const PRESETS = {
  induction: { label: 'Induction heads', fields: ['layers', 'heads', 'dim', 'context', 'vocab', 'batch', 'lr', 'steps', 'seed'], inductionEvery: 50 },
  shakespeare: { label: 'Shakespeare (characters)', fields: TEXT_FIELDS, inductionEvery: 250, text: true },
  llama: { label: 'Llama-style (characters)', fields: TEXT_FIELDS, inductionEvery: 250, text: true },
  moe: { label: 'Mixture of experts (characters)', fields: TEXT_FIELDS, inductionEvery: 250, text: true },
  dates: { label: 'Dates (encoder-decoder)', fields: ['layers', 'heads', 'dim', 'batch', 'lr', 'steps', 'seed'], inductionEvery: 250 },
};
const ABOUT = {
  induction: 'A 2-layer attention-only decoder on random tokens that repeat: it can only predict by finding the previous occurrence of the current token and copying what came next.',
  shakespeare: 'nanoGPT\u2019s baby GPT (LayerNorm, learned positions, GELU) on characters of the text.',
  llama: 'The same sizes as a Llama-style decoder: RMSNorm, rotary positions, SwiGLU, and two query heads sharing each key/value head.',
  moe: 'The seed\u2019s decoder with a mixture of 4 experts in each feed-forward layer, each token routed to its top 2, and a load-balancing loss; the chart shows how evenly the router spreads tokens.',
  dates: 'The seed\u2019s encoder-decoder learns to turn human-written dates ("3rd of March 1987") into ISO dates; it is scored on days it never trains on.',
};
const FIELDS = {
  layers: { label: 'Layers', min: 1, max: 48, step: 1 },
  heads: { label: 'Heads', min: 1, max: 64, step: 1 },
  dim: { label: 'Width', min: 4, max: 4096, step: 1 },
  context: { label: 'Context', min: 2, max: 4096, step: 1 },
  vocab: { label: 'Vocabulary', min: 2, max: 65536, step: 1 },
  batch: { label: 'Batch', min: 1, max: 4096, step: 1 },
  lr: { label: 'Learning rate', min: 0, max: 1, step: 'any' },
  steps: { label: 'Steps', min: 1, max: 1000000, step: 1 },
  seed: { label: 'Seed', min: 0, max: 2 ** 53, step: 1 },
};
const LOG_EVERY = 10;
/** An f32 setting as typed: 0.0010000000474974513 -> 0.001. */
const num = (x) => (typeof x === 'number' && !Number.isInteger(x) ? Number(x.toPrecision(6)) : x);
const SHIPPED_TEXT = 'www/data/shakespeare.txt.gz';
// A running run is saved in IndexedDB this often (and whenever it pauses, stops or ends).
const SAVE_EVERY_MS = 10_000;
// The sample temperature's range (train::lab::PROBE_MAX_TEMPERATURE; 0 = greedy)
const MAX_SAMPLE_TEMP = 2;

/** The last saved run in this browser's IndexedDB (one record; the page keeps one run). */
const runStore = {
  open() {
    return new Promise((resolve, reject) => {
      const req = indexedDB.open('tinyformer-lab', 1);
      req.onupgradeneeded = () => req.result.createObjectStore('runs');
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error ?? new Error('IndexedDB refused'));
    });
  },
  async tx(mode, fn) {
    const db = await runStore.open();
    try {
      return await new Promise((resolve, reject) => {
        const t = db.transaction('runs', mode);
        const req = fn(t.objectStore('runs'));
        t.oncomplete = () => resolve(req.result);
        t.onerror = () => reject(t.error ?? req.error);
        t.onabort = () => reject(t.error ?? new Error('the save was aborted'));
      });
    } finally {
      db.close();
    }
  },
  save: (rec) => runStore.tx('readwrite', (st) => st.put(rec, 'last')),
  load: () => runStore.tx('readonly', (st) => st.get('last')),
  clear: () => runStore.tx('readwrite', (st) => st.delete('last')),
};

/**
 * createTrainView(root, {request, runOn, onUseModel})
 *   request(type, args, opts): a worker call (core.call) for the `train*` actions
 *   runOn(): 'gpu' | 'cpu', the path the page's "Run on" control chooses for training
 *   onUseModel(bytes): load the trained checkpoint as the page's model
 */
export function createTrainView(root, { request, runOn, onUseModel }) {
  let presetName = 'induction';
  let settings = null;   // the preset's settings, as the core decided them (from trainPlan)
  let state = 'idle';
  let logs = [];         // every logged step
  let scores = [];       // [{step, best, head, heads}]
  let probes = [];       // [{step, ...train::lab::probe}]
  let loss100 = null;
  let planTimer = null;
  let planSeq = 0;       // the latest plan asked for; older answers are dropped
  let shipped = null;    // the shipped Shakespeare, once fetched
  let textChoice = 'shipped';
  let running = null;    // Promise of the trainRun in flight
  let probePrompt = null; // what a text model's sample starts from
  let runSpec = null;     // the spec and text the run was started with (what a save records)
  let runText = null;
  let saving = null;      // the IndexedDB write in flight
  let savedStep = null;
  let backend = null;
  let stopped = false;   // the run ended by Stop (state 'done')

  const preset = h('select', { id: 'train-preset', on: { change: () => { presetName = preset.value; settings = null; buildFields(); plan(); } } },
    Object.entries(PRESETS).map(([v, p]) => h('option', { value: v }, p.label)));
  const fieldsEl = h('div', { class: 'train-fields' });
  const inputs = {};
  const textBox = h('textarea', { id: 'train-text', rows: 4, placeholder: 'Paste a text to train on (UTF-8), or drop a .txt file here', on: { input: () => plan() } });
  const fileProgress = h('progress', { id: 'train-file-progress', class: 'train-file-progress', hidden: true, 'aria-label': 'Reading the text file' });
  const fileInput = h('input', { type: 'file', id: 'train-file', accept: '.txt,text/plain', on: { change: () => readFile(fileInput.files?.[0]) } });
  const choiceShipped = h('input', { type: 'radio', name: 'train-text-choice', id: 'train-text-shipped', value: 'shipped', checked: true, on: { change: () => chooseText('shipped') } });
  const choiceOwn = h('input', { type: 'radio', name: 'train-text-choice', id: 'train-text-own', value: 'own', on: { change: () => chooseText('own') } });
  const textEl = h('fieldset', { class: 'train-textsrc', hidden: true },
    h('legend', {}, 'Text'),
    h('label', { class: 'inline-field' }, choiceShipped, 'the shipped Shakespeare (1 MB)'),
    h('label', { class: 'inline-field' }, choiceOwn, 'your own text:'),
    textBox,
    h('label', { class: 'inline-field small' }, 'or a .txt file', fileInput),
    fileProgress);
  const memoryEl = h('p', { id: 'train-memory', class: 'small muted' }, 'Working out the memory this run needs…');
  const cliEl = h('p', { class: 'small muted train-cli' });
  const start = h('button', { type: 'button', id: 'train-start', on: { click: () => startRun() } }, 'Train');
  const pause = h('button', { type: 'button', class: 'secondary', id: 'train-pause', disabled: true, on: { click: () => togglePause() } }, 'Pause');
  const stop = h('button', { type: 'button', class: 'secondary', id: 'train-stop', disabled: true, on: { click: () => stopRun() } }, 'Stop');
  const lrLive = h('input', { type: 'number', id: 'train-lr-live', min: 0, max: 1, step: 'any', disabled: true, 'aria-label': 'Learning rate from the next step' });
  const setLr = h('button', { type: 'button', class: 'secondary', id: 'train-set-lr', disabled: true, on: { click: () => changeLr() } }, 'Set learning rate');
  const reset = h('button', { type: 'button', class: 'secondary', id: 'train-reset', disabled: true, on: { click: () => resetRun() } }, 'Reset');
  const download = h('button', { type: 'button', class: 'secondary', id: 'train-download', disabled: true, on: { click: () => saveModel() } }, 'Download checkpoint');
  const use = h('button', { type: 'button', class: 'secondary', id: 'train-use', disabled: true, on: { click: () => useModel() } }, 'Use this model');
  const liveBox = h('input', { type: 'checkbox', id: 'train-live', checked: true });
  const liveEl = h('label', { class: 'inline-field small' }, liveBox,
    'Live views: probe the model as it trains (head scores, attention maps, samples; off trains faster, and applies from the next Train or Resume)');
  const status = h('p', { id: 'train-status', role: 'status', 'aria-live': 'polite', dataset: { state: 'idle' } }, 'Not started.');
  const savedEl = h('p', { id: 'train-saved', class: 'small muted' });
  const restoreText = h('span', {});
  const restoreBtn = h('button', { type: 'button', id: 'train-restore', on: { click: () => restoreRun() } }, 'Resume the saved run');
  const discardBtn = h('button', { type: 'button', class: 'secondary', id: 'train-discard', on: { click: () => discardSaved() } }, 'Discard it');
  const restoreEl = h('div', { class: 'toolbar train-restore', id: 'train-restore-banner', hidden: true }, restoreText, restoreBtn, discardBtn);
  const errorEl = h('p', { id: 'train-error', class: 'status-error', role: 'alert', hidden: true });
  const lossChart = h('div', { class: 'train-chart', id: 'train-loss-chart' });
  const indChart = h('div', { class: 'train-chart', id: 'train-induction-chart' });
  const stats = h('dl', { class: 'train-stats', id: 'train-stats' });
  const aboutEl = h('p', { class: 'small muted', id: 'train-about' });
  const headsChart = h('div', { class: 'train-chart', id: 'train-heads-chart' });
  const extraChart = h('div', { class: 'train-chart', id: 'train-extra-chart' });
  const extraCaption = h('figcaption', {});
  const extraFig = h('figure', { hidden: true }, extraCaption, extraChart);
  const headsFig = h('figure', {}, h('figcaption', {}, 'Every head over the steps: previous-token score (dashed) and induction score (solid), on the Inspect view\u2019s Induction test'), headsChart);
  const probeMaps = h('div', { class: 'train-maps', id: 'train-maps' });
  const probeCaption = h('p', { class: 'small muted' });
  const sampleEl = h('pre', { class: 'train-sample', id: 'train-sample', hidden: true });
  // The sample's temperature (train::lab::ProbeSample): 0 = greedy; a change re-samples at once while paused or
  // done (trainProbe), and applies from the next probe while running (trainSampleTemp).
  const sampleTemp = h('input', { type: 'number', id: 'train-sample-temp', min: 0, max: MAX_SAMPLE_TEMP, step: 0.1, value: '0', inputmode: 'decimal',
    on: { change: () => changeSampleTemp() } });
  const sampleTempNote = h('span', { class: 'small muted', id: 'train-sample-temp-note' });
  const sampleTempEl = h('div', { class: 'train-sample-temp', hidden: true },
    h('label', { class: 'inline-field', for: 'train-sample-temp' }, 'Sample temperature', sampleTemp),
    h('p', { class: 'small muted' }, '0 always picks the most likely next character (the same text every time); higher (up to 2) ',
      'picks less likely ones more often, so the text gets more varied and, past about 1, more random.'),
    sampleTempNote);
  const probeEl = h('section', { class: 'train-probe', id: 'train-probe', hidden: true, 'aria-label': 'What the model does now' },
    h('h3', {}, 'What the model does now'), probeCaption, probeMaps, sampleTempEl, sampleEl);

  replaceChildren(root,
    h('p', { class: 'explain' }, 'Grow a small transformer here, on this device, and watch it learn: the loss falls and, on the induction task, ',
      'the induction score shows whether a head of the last layer has learned to look back to the token after the previous occurrence of ',
      'the current one (an induction head; a score near 0.5 is the most this test can give).'),
    h('div', { class: 'train-setup' },
      h('label', { class: 'inline-field' }, 'Preset', preset),
      aboutEl,
      fieldsEl,
      textEl,
      memoryEl,
      cliEl),
    restoreEl,
    h('div', { class: 'toolbar train-buttons' }, start, pause, stop, reset, download, use),
    h('div', { class: 'toolbar train-lr' }, h('label', { class: 'inline-field', for: 'train-lr-live' }, 'While paused:'), lrLive, setLr),
    liveEl,
    status,
    savedEl,
    errorEl,
    stats,
    h('div', { class: 'train-charts' },
      h('figure', {}, h('figcaption', {}, 'Loss (nats per token): training ', h('span', { class: 'key key-train' }, '—'), ' validation ', h('span', { class: 'key key-val' }, '●')), lossChart),
      h('figure', {}, h('figcaption', {}, 'Induction score of the last layer\u2019s best head (the Inspect view\u2019s detector)'), indChart),
      headsFig,
      extraFig),
    probeEl);

  function buildFields() {
    const p = PRESETS[presetName];
    replaceChildren(fieldsEl, p.fields.map((name) => {
      const f = FIELDS[name];
      const input = h('input', { type: 'number', id: `train-${name}`, name, min: f.min, max: f.max, step: f.step, on: { input: () => plan() } });
      inputs[name] = input;
      return h('label', { class: 'train-field' }, f.label, input);
    }));
    for (const k of Object.keys(inputs)) if (!p.fields.includes(k)) delete inputs[k];
    textEl.hidden = !p.text;
    aboutEl.textContent = ABOUT[presetName];
  }

  function spec() {
    const s = { preset: presetName };
    for (const [name, input] of Object.entries(inputs)) {
      if (input.value === '') continue;
      const v = Number(input.value);
      if (!Number.isFinite(v)) continue;
      s[name] = name === 'lr' ? v : Math.round(v);
    }
    return s;
  }

  function chooseText(which) {
    textChoice = which;
    plan();
  }

  /** Reads a chosen or dropped .txt in slices, with a progress bar; UTF-8 only, refused in one line otherwise. */
  async function readFile(file) {
    if (!file) return;
    clearError();
    try {
      if (file.size > 64 * 1024 * 1024) throw new Error(`${file.name} is over 64 MiB: give a shorter text`);
      fileProgress.max = Math.max(1, file.size);
      fileProgress.value = 0;
      fileProgress.hidden = false;
      const decoder = new TextDecoder('utf-8', { fatal: true });
      const parts = [];
      let read = 0;
      const reader = file.stream().getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        parts.push(decoder.decode(value, { stream: true }));
        read += value.byteLength;
        fileProgress.value = read;
        fileProgress.dataset.read = String(read);
      }
      parts.push(decoder.decode());
      const text = parts.join('');
      if (text.includes('\0')) throw new Error(`${file.name} holds NUL bytes: give a text file`);
      textBox.value = text;
      choiceOwn.checked = true;
      chooseText('own');
    } catch (err) {
      showError(err instanceof TypeError ? `${file.name} is not UTF-8 text` : err.message);
    } finally {
      fileProgress.hidden = true;
    }
  }

  textBox.addEventListener('drop', (e) => {
    e.preventDefault();
    readFile(e.dataTransfer?.files?.[0]);
  });

  /** The text to train on, for a text preset (the shipped one is fetched once). */
  async function text() {
    if (!PRESETS[presetName].text) return null;
    if (textChoice === 'own') return textBox.value;
    return shippedText();
  }

  function shippedText() {
    shipped ??= (async () => {
      const res = await fetch(SHIPPED_TEXT);
      if (!res.ok) throw new Error(`could not fetch the shipped text (HTTP ${res.status})`);
      const stream = res.body.pipeThrough(new DecompressionStream('gzip')).pipeThrough(new TextDecoderStream());
      let out = '';
      for await (const part of stream) out += part;
      return out;
    })();
    shipped.catch(() => { shipped = null; });
    return shipped;
  }

  function plan() {
    clearTimeout(planTimer);
    const mine = ++planSeq;
    planTimer = setTimeout(async () => {
      try {
        const p = await request('trainPlan', { spec: spec(), text: await text() });
        if (mine !== planSeq) return; // a newer plan was asked for (the shipped text may arrive late)
        showPlan(p);
        if (state === 'idle' || state === 'error') clearError();
      } catch (err) {
        if (mine !== planSeq) return;
        memoryEl.dataset.total = '';
        memoryEl.textContent = 'This run cannot be planned.';
        replaceChildren(cliEl);
        showError(err.message);
        fillDefaults(mine);
      }
    }, 150);
  }

  /** A text the core refused leaves the preset's fields empty: fill them from the plan of the shipped text. */
  async function fillDefaults(mine) {
    if (presetName !== 'shakespeare' || Object.values(inputs).every((i) => i.value !== '')) return;
    try {
      const p = await request('trainPlan', { spec: { preset: presetName }, text: await shippedText() });
      if (mine !== planSeq) return;
      for (const [name, input] of Object.entries(inputs)) {
        if (input.value === '' && p.settings[name] != null) input.value = String(num(p.settings[name]));
      }
    } catch { /* the refusal already shown says what is wrong */ }
  }

  function showPlan(p) {
    settings = p.settings;
    for (const [name, input] of Object.entries(inputs)) {
      if (input.value === '' && p.settings[name] != null) input.value = String(num(p.settings[name]));
    }
    const m = p.memory;
    memoryEl.dataset.total = String(m.total);
    memoryEl.textContent = `${formatInt(p.params)} parameters. Training needs ${formatBytes(m.total)}: weights ${formatBytes(m.weights)}, ` +
      `gradients ${formatBytes(m.gradients)}, Adam moments ${formatBytes(m.adam_moments)}, activations ${formatBytes(m.activations)}.`;
    const cli = p.cli.map((a) => (a === 'TEXT.txt' ? (textChoice === 'own' ? 'your-text.txt' : 'shakespeare.txt') : a));
    // each flag with its value unbroken (a line may break between them, never inside "--layers 2")
    const pairs = [['tinyformer', cli[0]]];
    for (let i = 1; i < cli.length; i += 2) pairs.push(cli.slice(i, i + 2));
    const code = h('code', { id: 'train-cli' });
    pairs.forEach((p, i) => code.append(...(i ? [' '] : []), h('span', { class: 'nowrap' }, p.join(' '))));
    replaceChildren(cliEl, 'The same run from the command line: ', code);
    if (!logs.length) scheduleDraw();
  }

  function showError(msg) {
    errorEl.hidden = false;
    errorEl.textContent = String(msg).split('\n')[0];
  }
  function clearError() {
    errorEl.hidden = true;
    errorEl.textContent = '';
  }

  function setState(s) {
    state = s;
    status.dataset.state = s;
    const busy = s === 'running' || s === 'paused';
    start.disabled = s === 'running' || s === 'starting';
    preset.disabled = busy || s === 'starting';
    for (const input of Object.values(inputs)) input.disabled = busy || s === 'starting';
    pause.disabled = !busy;
    pause.textContent = s === 'paused' ? 'Resume' : 'Pause';
    stop.disabled = !busy;
    lrLive.disabled = s !== 'paused';
    setLr.disabled = s !== 'paused';
    const haveModel = ['paused', 'done'].includes(s) && logs.length > 0;
    reset.disabled = !['paused', 'done', 'error'].includes(s);
    download.disabled = !haveModel;
    use.disabled = !haveModel;
    drawStatus();
  }

  function last(key) {
    for (let i = logs.length - 1; i >= 0; i--) if (logs[i][key] != null) return logs[i];
    return null;
  }

  function drawStatus() {
    const l = logs.at(-1);
    const v = last('val_loss');
    const ind = scores.at(-1);
    const d = status.dataset;
    d.step = String(l?.step ?? 0);
    d.loss = l ? String(l.loss) : '';
    d.lossFirst = logs.length ? String(logs[0].loss) : '';
    d.valLoss = v ? String(v.val_loss) : '';
    d.tokensPerS = l ? String(Math.round(l.tokens_per_second)) : '';
    d.induction = ind && ind.best != null ? String(ind.best) : '';
    const dates = probes.at(-1)?.dates;
    d.datesExact = dates ? String(dates.exact / dates.of) : '';
    if (loss100 != null) status.setAttribute('data-loss-100', String(loss100));
    else status.removeAttribute('data-loss-100');
    d.backend = backend ?? '';
    const total = settings?.steps;
    const words = { idle: 'Not started.', starting: 'Starting…', running: 'Training', paused: 'Paused', done: stopped ? 'Stopped' : 'Done', error: 'Stopped by an error' }[state] ?? state;
    status.textContent = l
      ? `${words}: step ${formatInt(l.step)}${total ? ` of ${formatInt(total)}` : ''} on ${backend === 'gpu' ? 'WebGPU' : 'the CPU path'}, loss ${l.loss.toFixed(3)}` +
        (v ? `, validation ${v.val_loss.toFixed(3)}` : '') + (ind?.best != null ? `, induction score ${ind.best.toFixed(2)}` : '') +
        (dates ? `, ${dates.exact} of ${dates.of} held-out dates exact` : '') + '.'
      : words;
    const rows = l ? [
      ['Tokens per second', formatInt(Math.round(l.tokens_per_second))],
      ['Step time', l.tokens_per_second > 0 && settings ? `${(1000 * settings.batch * settings.context / l.tokens_per_second).toFixed(1)} ms` : '–'],
      ['Learning rate', l.lr.toPrecision(3)],
      ['Gradient norm', l.grad_norm.toFixed(3)],
      ['Time training', `${l.elapsed_s.toFixed(1)} s`],
      ['Best induction head', ind?.best != null ? `L${ind.layer} H${ind.head}: ${ind.best.toFixed(3)} (step ${ind.step})` : '–'],
    ] : [];
    replaceChildren(stats, rows.map(([k, val]) => h('div', {}, h('dt', {}, k), h('dd', {}, val))));
  }

  function drawCharts() {
    const train = logs.map((l) => [l.step, l.loss]);
    const val = logs.filter((l) => l.val_loss != null).map((l) => [l.step, l.val_loss]);
    const maxStep = settings?.steps ?? Math.max(1, ...train.map((p) => p[0]));
    replaceChildren(lossChart, chart([{ points: train, cls: 'line-train' }, { points: val, cls: 'dots-val', dots: true }], maxStep, 'loss'));
    const ind = scores.map((s) => [s.step, s.best]);
    const marks = formedAt() != null ? [formedAt()] : [];
    replaceChildren(indChart, chart([{ points: ind, cls: 'line-ind', dots: ind.length < 40 }], maxStep, 'score', { yMin: 0, yMax: Math.max(0.5, ...ind.map((p) => p[1])), marks }));
    if (marks.length) {
      lossChart.firstChild?.append(markLine(marks[0], maxStep));
    }
    drawProbe(maxStep);
  }

  /** A key to the coloured lines of a chart: a swatch and the label of each. */
  function legend(series) {
    return h('p', { class: 'chart-legend small' }, series.map((x) => {
      const sw = h('span', { class: 'swatch', 'aria-hidden': 'true' });
      sw.style.background = x.color; // CSSOM: the page's CSP refuses style attributes
      return h('span', { class: 'legend-item' }, sw, x.label);
    }));
  }

  /** Per-head curves, the preset's own chart (experts' load, dates accuracy) and the latest probe. */
  function drawProbe(maxStep) {
    const withHeads = probes.filter((p) => p.induction_heads?.length);
    headsFig.hidden = !withHeads.length && presetName === 'dates';
    const series = [];
    const first = withHeads[0];
    if (first) {
      const n = first.induction_heads.flat().length;
      first.induction_heads.forEach((row, l) => row.forEach((_, hd) => {
        const hue = Math.round((360 * (l * row.length + hd)) / Math.max(1, n));
        const at = (key) => withHeads.map((p) => [p.step, p[key][l][hd]]);
        series.push({ points: at('previous_token_heads'), cls: 'line-head dashed', color: `hsl(${hue} 65% 42%)` });
        series.push({ points: at('induction_heads'), cls: 'line-head', color: `hsl(${hue} 65% 42%)`, label: `L${l} H${hd}` });
      }));
    }
    replaceChildren(headsChart, chart(series, maxStep, 'score', { yMin: 0, yMax: 1 }), legend(series.filter((x) => x.label)));
    const lastProbe = probes.at(-1);
    if (presetName === 'moe' && probes.some((p) => p.expert_load)) {
      extraCaption.textContent = 'Share of the routed tokens each expert takes (mean over layers; an even router gives 0.25 each)';
      const ne = lastProbe.expert_load[0]?.length ?? 0;
      const experts = Array.from({ length: ne }, (_, e) => ({
        points: probes.filter((p) => p.expert_load).map((p) => [p.step, p.expert_load.reduce((a, row) => a + row[e], 0) / p.expert_load.length]),
        cls: 'line-head', color: `hsl(${Math.round((360 * e) / ne)} 65% 42%)`, label: `expert ${e}`,
      }));
      replaceChildren(extraChart, chart(experts, maxStep, 'share', { yMin: 0, yMax: 1 }), legend(experts));
      extraFig.hidden = false;
    } else if (presetName === 'dates' && probes.some((p) => p.dates)) {
      extraCaption.textContent = 'Held-out dates translated exactly (greedy, 32 days the model never trains on)';
      const acc = probes.filter((p) => p.dates).map((p) => [p.step, p.dates.exact / p.dates.of]);
      replaceChildren(extraChart, chart([{ points: acc, cls: 'line-ind', dots: acc.length < 40 }], maxStep, 'exact', { yMin: 0, yMax: 1 }));
      extraFig.hidden = false;
    } else {
      extraFig.hidden = true;
    }
    probeEl.hidden = !lastProbe;
    if (!lastProbe) return;
    const maps = lastProbe.maps ?? [];
    probeCaption.textContent = maps.length
      ? `Step ${formatInt(lastProbe.step)}: every head\u2019s attention on ${lastProbe.sample != null ? 'the start of the text and the model\u2019s own continuation' : 'a random sequence repeated twice (rows: queries, columns: keys; an induction head draws a diagonal stripe in the second half)'}.`
      : `Step ${formatInt(lastProbe.step)}.`;
    replaceChildren(probeMaps, maps.flatMap((m) => Array.from({ length: m.heads }, (_, hd) => {
      const canvas = h('canvas', { class: 'train-map', width: m.cols, height: m.rows, 'aria-label': `L${m.layer} H${hd}` });
      drawThumbnail(canvas, m, hd, null);
      return h('figure', { class: 'train-map-fig' }, canvas, h('figcaption', {}, `L${m.layer} H${hd}`));
    })));
    const dates = lastProbe.dates;
    const sample = lastProbe.sample ?? (dates ? dates.examples.map(([src, got, want]) => `${src} \u2192 ${got}${got === want ? ' \u2713' : ` (want ${want})`}`).join('\n') : null);
    sampleEl.hidden = sample == null;
    sampleEl.textContent = sample ?? '';
    // for tests: the step and temperature the shown sample was drawn at
    sampleEl.dataset.step = String(lastProbe.step);
    // (the core's f32: 0.8 comes back as 0.800000011920929)
    const temp = num(lastProbe.sample_temperature ?? 0);
    sampleEl.dataset.temperature = String(temp);
    sampleTempEl.hidden = lastProbe.sample == null;
    if (state === 'running' && temp === sampleTempWanted) sampleTempNote.textContent = '';
  }

  let clamped = false; // the last value read was out of range
  /** The temperature control's value: out of range is clamped to 0..2 (and shown so); not a number is refused. */
  function readSampleTemp() {
    const raw = sampleTemp.value.trim();
    const t = raw === '' ? NaN : Number(raw);
    if (!Number.isFinite(t)) return null;
    const c = Math.round(Math.min(MAX_SAMPLE_TEMP, Math.max(0, t)) * 100) / 100;
    if (String(c) !== raw) sampleTemp.value = String(c);
    clamped = c !== t;
    return c;
  }

  let sampleTempWanted = 0; // the last good value of the control
  let reprobe = null;       // the trainProbe in flight
  async function changeSampleTemp() {
    const t = readSampleTemp();
    if (t == null) {
      sampleTempNote.textContent = `Not a number: the sample stays at ${sampleTempWanted}.`;
      sampleTemp.value = String(sampleTempWanted);
      return;
    }
    sampleTempWanted = t;
    sampleTempNote.textContent = clamped ? `Kept within 0 to ${MAX_SAMPLE_TEMP}: ${t}.` : '';
    try {
      if (state === 'running') {
        await request('trainSampleTemp', { temperature: t });
        sampleTempNote.textContent = `${sampleTempNote.textContent} From the next sample on.`.trim();
      } else if (['paused', 'done'].includes(state) && runSpec) {
        // re-sample the current model now; the newest answer wins
        const step = logs.at(-1)?.step ?? probes.at(-1)?.step ?? 0;
        const ask = request('trainProbe', { prompt: probePrompt, temperature: t });
        reprobe = ask;
        const r = await ask;
        // a later change, or a run resumed meanwhile, supersedes this answer
        if (reprobe !== ask || !r.probe || !['paused', 'done'].includes(state)) return;
        const p = { step, ...r.probe };
        if (probes.at(-1)?.step === step) probes[probes.length - 1] = p;
        else probes.push(p);
        scheduleDraw();
      }
    } catch (err) {
      showError(err.message);
    }
  }

  /** The first step whose induction score reached 0.4 (the mark on both charts). */
  function formedAt() {
    return scores.find((s) => s.best >= 0.4)?.step ?? null;
  }

  const W = 480;
  const H = 180;
  const PAD = { l: 44, r: 10, t: 10, b: 26 };
  const SVG = 'http://www.w3.org/2000/svg';
  const svg = (tag, attrs = {}, ...kids) => {
    const el = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
    for (const k of kids) el.append(k);
    return el;
  };
  let scaleX = (s) => s;

  function markLine(step, maxStep) {
    const x = PAD.l + (W - PAD.l - PAD.r) * (step / maxStep);
    return svg('g', { class: 'mark' }, svg('line', { x1: x, x2: x, y1: PAD.t, y2: H - PAD.b }), svg('text', { x: x + 3, y: PAD.t + 10 }, `induction head at step ${step}`));
  }

  function chart(series, maxStep, what, { yMin, yMax, marks = [] } = {}) {
    const all = series.flatMap((s) => s.points.map((p) => p[1])).filter(Number.isFinite);
    const lo = yMin ?? (all.length ? Math.min(...all) : 0);
    let hi = yMax ?? (all.length ? Math.max(...all) : 1);
    if (hi - lo < 1e-6) hi = lo + 1;
    scaleX = (s) => PAD.l + (W - PAD.l - PAD.r) * (s / maxStep);
    const y = (v) => PAD.t + (H - PAD.t - PAD.b) * (1 - (v - lo) / (hi - lo));
    const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': `${what} over steps`, class: 'chart-svg' });
    root.append(svg('line', { class: 'axis', x1: PAD.l, x2: W - PAD.r, y1: H - PAD.b, y2: H - PAD.b }));
    root.append(svg('line', { class: 'axis', x1: PAD.l, x2: PAD.l, y1: PAD.t, y2: H - PAD.b }));
    for (const v of [lo, (lo + hi) / 2, hi]) root.append(svg('text', { class: 'tick', x: PAD.l - 4, y: y(v) + 4, 'text-anchor': 'end' }, v.toFixed(2)));
    for (const s of [0, maxStep]) root.append(svg('text', { class: 'tick', x: scaleX(s), y: H - 8, 'text-anchor': s ? 'end' : 'start' }, s ? `step ${formatInt(s)}` : '0'));
    for (const s of series) {
      if (!s.points.length) continue;
      if (!s.dots || s.cls !== 'dots-val') {
        const line = svg('polyline', { class: s.cls, points: s.points.map(([a, b]) => `${scaleX(a).toFixed(1)},${y(b).toFixed(1)}`).join(' ') });
        if (s.color) line.style.stroke = s.color; // CSSOM: the page's CSP refuses style attributes
        if (s.label) line.append(svg('title', {}, s.label));
        root.append(line);
      }
      if (s.dots) for (const [a, b] of s.points) root.append(svg('circle', { class: s.cls, cx: scaleX(a).toFixed(1), cy: y(b).toFixed(1), r: 2.5 }));
    }
    for (const m of marks) root.append(markLine(m, maxStep));
    return root;
  }

  function absorb(ev) {
    if (ev.kind === 'snapshot') {
      persist(ev);
      return;
    }
    for (const l of ev.logs ?? []) {
      logs.push(l);
      if (l.step === 100) loss100 = l.loss;
    }
    for (const s of [ev.inductionStart, ev.induction]) {
      if (!s) continue;
      if (s.best != null) scores.push({ ...s, layer: (settings?.layers ?? 1) - 1 });
      if (s.probe) probes.push({ step: s.step, ...s.probe });
    }
    drawStatus();
    scheduleDraw();
  }

  let drawQueued = false;
  function scheduleDraw() {
    if (drawQueued) return;
    drawQueued = true;
    requestAnimationFrame(() => {
      drawQueued = false;
      drawCharts();
    });
  }

  /** Clears what the page holds of a run: its log, scores, probes and state flags. */
  function forgetCurves() {
    logs = [];
    scores = [];
    probes = [];
    loss100 = null;
    backend = null;
    stopped = false;
  }

  async function startRun() {
    if (state === 'running' || state === 'starting') return;
    clearError();
    restoreEl.hidden = true; // this run's saves replace the saved one
    forgetCurves();
    setState('starting');
    drawCharts();
    try {
      const t = await text();
      runSpec = spec();
      runText = t;
      // a text model's sample starts from the text's first line (at most 16 characters: all in its vocabulary)
      probePrompt = t ? [...t.split('\n').find((l) => l.trim()) ?? t].slice(0, 16).join('') : null;
      const p = await request('trainStart', { spec: spec(), text: t, gpu: runOn() === 'gpu' });
      showPlan(p);
      backend = p.backend;
      lrLive.value = String(num(p.settings.lr));
    } catch (err) {
      setState('error');
      showError(err.message);
      return;
    }
    await runLoop();
  }

  async function runLoop() {
    setState('running');
    running = request('trainRun', { every: LOG_EVERY, inductionEvery: liveBox.checked ? PRESETS[presetName].inductionEvery : 0, prompt: probePrompt, snapshotMs: SAVE_EVERY_MS, temperature: sampleTempWanted }, { onEvent: absorb });
    try {
      const r = await running;
      running = null;
      stopped = r.state === 'stopped';
      setState(r.state === 'paused' ? 'paused' : 'done');
    } catch (err) {
      running = null;
      setState('error');
      showError(err.message);
    }
    scheduleDraw();
  }

  async function togglePause() {
    if (state === 'running') {
      pause.disabled = true;
      await request('trainPause', {}).catch((err) => showError(err.message));
    } else if (state === 'paused') {
      await runLoop();
    }
  }

  async function stopRun() {
    if (state === 'running') {
      stop.disabled = true;
      await request('trainStop', {}).catch((err) => showError(err.message));
    } else if (state === 'paused') {
      stopped = true;
      setState('done');
    }
  }

  /** Ends the run (its memory freed in the worker) and clears the curves. */
  /** Keeps a snapshot of the run (the core's weights, moments and log, plus the page's curves) in IndexedDB. */
  function persist(ev) {
    if (!runSpec) return;
    // the maps of the last probe only: the curves need the scores, not every old map
    const keep = probes.map((p, i) => (i === probes.length - 1 ? p : { ...p, maps: [] }));
    const rec = {
      savedAt: Date.now(), step: ev.step, preset: presetName, spec: runSpec, textChoice,
      text: textChoice === 'own' ? runText : null, snapshot: ev.bytes, scores, probes: keep, prompt: probePrompt,
    };
    const write = (saving ?? Promise.resolve()).then(() => runStore.save(rec));
    saving = write;
    write.then(() => {
      savedStep = ev.step;
      status.dataset.savedStep = String(ev.step);
      savedEl.textContent = `Saved in this browser at step ${formatInt(ev.step)} (${new Date(rec.savedAt).toLocaleTimeString()}): a reload or a closed tab resumes from here.`;
    }, (err) => {
      savedEl.textContent = `Could not save the run in this browser (${err?.message ?? err}); it goes on unsaved.`;
    }).finally(() => { if (saving === write) saving = null; });
  }

  async function offerSaved() {
    let rec = null;
    try {
      rec = await runStore.load();
    } catch {
      return; // no IndexedDB here: nothing was saved either
    }
    restoreEl.hidden = !rec || state === 'running' || state === 'starting';
    if (rec) restoreText.textContent = `A run of ${PRESETS[rec.preset]?.label ?? rec.preset} was saved at step ${formatInt(rec.step)} (${new Date(rec.savedAt).toLocaleString()}).`;
  }

  async function discardSaved() {
    restoreEl.hidden = true;
    await saving?.catch(() => {}); // a save in flight lands first, then goes
    await runStore.clear().catch(() => {});
  }

  /** Rebuilds the saved run in the worker (trainResume) with its settings, text and curves; it comes back paused. */
  async function restoreRun() {
    let rec;
    try {
      rec = await runStore.load();
      if (!rec) throw new Error('the saved run is gone');
    } catch (err) {
      showError(`Could not read the saved run: ${err.message}`);
      return;
    }
    restoreEl.hidden = true;
    clearError();
    presetName = rec.preset;
    preset.value = rec.preset;
    settings = null;
    buildFields();
    for (const [name, input] of Object.entries(inputs)) input.value = rec.spec[name] != null ? String(rec.spec[name]) : '';
    textChoice = rec.textChoice ?? 'shipped';
    (textChoice === 'own' ? choiceOwn : choiceShipped).checked = true;
    if (textChoice === 'own') textBox.value = rec.text ?? '';
    setState('starting');
    try {
      const t = await text();
      const p = await request('trainResume', { spec: rec.spec, text: t, gpu: runOn() === 'gpu', snapshot: rec.snapshot });
      runSpec = rec.spec;
      runText = t;
      probePrompt = rec.prompt ?? null;
      showPlan(p);
      backend = p.backend;
      lrLive.value = String(num(p.settings.lr));
      logs = p.log;
      loss100 = logs.find((l) => l.step === 100)?.loss ?? null;
      scores = rec.scores ?? [];
      probes = rec.probes ?? [];
      stopped = false;
      savedStep = rec.step;
      status.dataset.savedStep = String(rec.step);
      savedEl.textContent = `Resumed from the save at step ${formatInt(rec.step)}.`;
      setState(rec.step >= p.settings.steps ? 'done' : 'paused');
    } catch (err) {
      setState('error');
      showError(err.message);
      restoreEl.hidden = false;
    }
    scheduleDraw();
  }

  async function resetRun() {
    if (!['paused', 'done', 'error'].includes(state)) return;
    runSpec = null; // no more saves of this run
    await discardSaved();
    savedEl.textContent = '';
    status.removeAttribute('data-saved-step');
    await request('trainEnd', {}).catch((err) => showError(err.message));
    forgetCurves();
    clearError();
    setState('idle');
    scheduleDraw();
  }

  async function changeLr() {
    const lr = Number(lrLive.value);
    try {
      const s = await request('trainSetLr', { lr });
      settings = s;
      if (inputs.lr) inputs.lr.value = String(num(s.lr));
      clearError();
    } catch (err) {
      showError(err.message);
    }
  }

  async function checkpoint() {
    const { bytes } = await request('trainModel', {});
    return bytes;
  }

  async function saveModel() {
    try {
      const bytes = await checkpoint();
      const url = URL.createObjectURL(new Blob([bytes], { type: 'application/octet-stream' }));
      const a = h('a', { href: url, download: `tinyformer-${presetName}-step${logs.at(-1)?.step ?? 0}.safetensors` });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } catch (err) {
      showError(err.message);
    }
  }

  async function useModel() {
    try {
      onUseModel(await checkpoint(), { name: `${PRESETS[presetName].label}, trained here to step ${logs.at(-1)?.step ?? 0}` });
    } catch (err) {
      showError(err.message);
    }
  }

  buildFields();
  setState('idle');
  drawCharts();

  return {
    /** The core is ready: plan the default run (the memory shown before Train). */
    ready() {
      plan();
      offerSaved();
    },
    /** The worker restarted: any run it held is gone. */
    reset() {
      if (state === 'running' || state === 'paused' || state === 'starting') {
        setState('error');
        showError(savedStep != null
          ? `The worker restarted; the run is saved at step ${formatInt(savedStep)}: resume it below.`
          : 'The worker restarted, so the training run was lost; press Train to start again.');
        offerSaved();
      }
    },
  };
}
