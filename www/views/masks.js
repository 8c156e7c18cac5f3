// "Masks": the look-ahead, padding, combined and KV-cache masks as labelled grids, drawn from core.masks().
// Nothing here computes a mask: the values come from the Rust core (via the worker) and are only drawn.
//
// Convention: 1 = may attend, 0 = blocked; rows are queries, columns are keys (row-major [query][key]).
// A toggle shows the seed's own helpers' convention instead (1 = blocked): only the printed digits flip,
// data-value always holds the core's value (1 = may attend) and data-shown the digit on screen.
// "The current input": the encoder / decoder / cross masks that forward() used for the prompt, labelled
// with its tokens (#masks-input, [data-matrix="input-KIND"]).
// State for tests:
//   #masks-grid         data-state "loading" | "ready" | "error" (error: the grids shown are the last valid ones)
//                       data-seq-len / data-num-pad / data-cached-len of what is drawn
//   [data-matrix=NAME]  one per matrix (look_ahead, padding, combined, kv_cache), data-rows / data-cols
//   td.cell             data-row, data-col, data-value ("1" or "0")
//   #masks-error        the core's message when the inputs are rejected (hidden otherwise)
import { h, replaceChildren } from '../dom.js';

const MATRICES = [
  {
    key: 'look_ahead',
    title: 'Look-ahead (causal)',
    explain: () => 'Query i sees keys 0..i: no token can look at a later one.',
  },
  {
    key: 'padding',
    title: 'Padding',
    explain: (m) => m.num_pad === 0
      ? 'No PAD tokens here, so every key is visible to every query.'
      : `The ${m.num_pad} PAD key${m.num_pad === 1 ? ' is' : 's are'} hidden from every query; real keys stay visible.`,
  },
  {
    key: 'combined',
    title: 'Combined (look-ahead AND padding)',
    explain: () => 'Decoder self-attention: a key is visible only if both masks allow it (earlier or same position, not PAD).',
  },
  {
    key: 'cross',
    title: 'Cross (decoder → padded source)',
    explain: (m) => m.num_pad === 0
      ? 'Each decoder position sees every source token: the source has no PAD.'
      : `Each decoder position sees every source token except the ${m.num_pad} PAD${m.num_pad === 1 ? '' : 's'}: the source key padding mask.`,
  },
  {
    key: 'kv_cache',
    title: 'KV cache (causal with offset)',
    explain: (m) => `Generating ${m.seq_len} new token${m.seq_len === 1 ? '' : 's'} after ${m.cached_len} cached: ` +
      'each new token sees every cached key and the new ones up to itself.',
  },
];

const FIELDS = [
  ['seq_len', 'Sequence length'],
  ['num_pad', 'PAD tokens'],
  ['cached_len', 'Cached length'],
];

const DEBOUNCE_MS = 150;

const INPUT_MATRICES = {
  encoder: { title: 'Encoder self (padding)', explain: 'Each source token sees every source token that is not PAD.' },
  decoder: { title: 'Decoder self (look-ahead AND padding)', explain: 'Each output position sees itself and the earlier ones, never a later one.' },
  cross: { title: 'Cross (decoder → encoder)', explain: 'Each output position sees every source token that is not PAD: the key padding mask.' },
};

export function createMasksView({ form, grid, errorEl, request, toggle, legend, inputGrid }) {
  const inputs = Object.fromEntries(FIELDS.map(([name]) => [name, form.elements.namedItem(name)]));
  let seq = 0;       // request counter: only the newest answer is drawn
  let timer = null;
  let last = null;   // the last drawn core answer
  let lastInput = null;
  let seed = false;  // show 1 = blocked

  toggle?.addEventListener('change', () => {
    seed = toggle.checked;
    drawLegend();
    if (last) draw(last);
    if (lastInput) showInput(lastInput);
  });

  function drawLegend() {
    if (!legend) return;
    replaceChildren(legend,
      h('span', { class: 'swatch swatch-1', 'aria-hidden': 'true' }, seed ? '0' : '1'), seed ? ' = may attend' : ' = may attend',
      h('span', { class: 'swatch swatch-0', 'aria-hidden': 'true' }, seed ? '1' : '0'), ' = blocked',
      h('span', { class: 'muted legend-note' }, seed
        ? 'The seed\u2019s helpers\u2019 convention: 1 marks a blocked position (they fill it with -1e9). Rows are queries, columns are keys.'
        : 'Our convention: 1 = may attend. Rows are queries, columns are keys.'));
    legend.dataset.convention = seed ? 'blocked' : 'attend';
  }

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    refresh();
  });
  form.addEventListener('input', () => {
    clearTimeout(timer);
    timer = setTimeout(refresh, DEBOUNCE_MS);
  });

  function showError(message) {
    errorEl.textContent = message;
    errorEl.hidden = false;
    for (const input of Object.values(inputs)) input.setAttribute('aria-invalid', 'true');
    grid.dataset.state = 'error';
  }

  function clearError() {
    errorEl.textContent = '';
    errorEl.hidden = true;
    for (const input of Object.values(inputs)) input.removeAttribute('aria-invalid');
  }

  // Reads the inputs as typed. Only checks that each is a whole number: the ranges are the core's to judge.
  function readInputs() {
    const args = {};
    for (const [name, label] of FIELDS) {
      const raw = inputs[name].value.trim();
      if (raw === '') return { error: `${label}: enter a whole number.` };
      if (!/^\d+$/.test(raw)) return { error: `${label}: "${raw}" is not a whole number of 0 or more.` };
      const n = Number(raw);
      if (!Number.isSafeInteger(n) || n > 0xffff_ffff) return { error: `${label}: ${raw} is far too large.` };
      args[name] = n;
    }
    return { args };
  }

  async function refresh() {
    clearTimeout(timer);
    const mine = ++seq;
    const { args, error } = readInputs();
    if (error) return showError(error);
    grid.dataset.state = 'loading';
    grid.setAttribute('aria-busy', 'true');
    let result;
    try {
      result = await request(args);
    } catch (err) {
      if (mine === seq) {
        grid.removeAttribute('aria-busy');
        showError(err.message);
      }
      return;
    }
    if (mine !== seq) return;
    grid.removeAttribute('aria-busy');
    clearError();
    draw(result);
  }

  function draw(m) {
    last = m;
    grid.dataset.seqLen = String(m.seq_len);
    grid.dataset.numPad = String(m.num_pad);
    grid.dataset.cachedLen = String(m.cached_len);
    replaceChildren(grid, MATRICES.filter(({ key }) => m[key]).map((spec) => matrixFigure(spec, m, { seed })));
    grid.dataset.state = 'ready';
  }

  /** data: {masks: {encoder|decoder|cross: {rows, cols, data}}, labels: {kind: {rows, cols}}} from forward() */
  function showInput(data) {
    lastInput = data;
    if (!inputGrid) return;
    const kinds = Object.keys(INPUT_MATRICES).filter((k) => data.masks?.[k]);
    replaceChildren(inputGrid, kinds.map((k) => matrixFigure({
      key: `input-${k}`, title: INPUT_MATRICES[k].title, explain: () => INPUT_MATRICES[k].explain,
    }, { [`input-${k}`]: data.masks[k] }, { seed, labels: data.labels[k] })));
    inputGrid.dataset.state = kinds.length ? 'ready' : 'empty';
  }

  function clearInput(message) {
    lastInput = null;
    if (!inputGrid) return;
    inputGrid.dataset.state = 'empty';
    replaceChildren(inputGrid, h('p', { class: 'muted' }, message));
  }

  drawLegend();
  return { refresh, showInput, clearInput };
}

function labelsFor(key, m, matrix) {
  const tokens = Array.isArray(m.tokens) ? m.tokens : [];
  if (key === 'cross') {
    const rows = Array.from({ length: matrix.rows }, (_, i) => `y${i}`);
    const cols = Array.from({ length: matrix.cols }, (_, j) => tokens[j] ?? `s${j}`);
    return { rows, cols, groups: null };
  }
  if (key !== 'kv_cache') {
    const labels = Array.from({ length: matrix.rows }, (_, i) => tokens[i] ?? `t${i}`);
    return { rows: labels, cols: labels.slice(0, matrix.cols), groups: null };
  }
  // KV cache: the keys are the cached positions followed by the new tokens (the queries).
  const cached = matrix.cols - matrix.rows;
  const rows = Array.from({ length: matrix.rows }, (_, i) => `n${i}`);
  const cols = [
    ...Array.from({ length: cached }, (_, j) => `c${j}`),
    ...rows,
  ];
  const groups = [
    cached > 0 ? { label: 'cached', span: cached } : null,
    { label: 'new', span: matrix.rows },
  ].filter(Boolean);
  return { rows, cols, groups, cached };
}

function labelTitle(label, index, key, cached) {
  if (key === 'kv_cache') {
    return index < cached ? `cached key at position ${index}` : `new token ${index - cached} (position ${index})`;
  }
  return label === 'PAD' ? `position ${index}: padding` : `position ${index}`;
}

function matrixFigure({ key, title, explain }, m, { seed = false, labels: given = null } = {}) {
  const matrix = m[key];
  const { rows, cols, data } = matrix;
  const labels = given
    ? { rows: Array.from({ length: rows }, (_, i) => given.rows[i] ?? `t${i}`), cols: Array.from({ length: cols }, (_, j) => given.cols[j] ?? `t${j}`), groups: null }
    : labelsFor(key, m, matrix);
  const size = Math.max(rows, cols);
  const density = size <= 12 ? 'roomy' : size <= 24 ? 'normal' : size <= 40 ? 'dense' : 'tiny';
  const captionId = `mask-${key}-caption`;

  const headRows = [];
  if (labels.groups) {
    headRows.push(h('tr', { class: 'groups' },
      h('td', { class: 'corner' }),
      labels.groups.map((g) => h('th', { scope: 'colgroup', colspan: g.span, class: `group group-${g.label}` }, g.label))));
  }
  headRows.push(h('tr', {},
    h('td', { class: 'corner', title: 'rows: queries, columns: keys' }, h('span', { 'aria-hidden': 'true' }, 'q\\k')),
    labels.cols.map((label, j) => h('th', {
      scope: 'col',
      class: `col-label${label === 'PAD' ? ' pad' : ''}${labels.cached !== undefined && j < labels.cached ? ' cached' : ''}`,
      title: labelTitle(label, j, key, labels.cached),
      dataset: { col: j },
    }, label))));

  const body = [];
  for (let i = 0; i < rows; i++) {
    const cells = [];
    for (let j = 0; j < cols; j++) {
      const v = data[i * cols + j];
      const on = v === 1;
      const shown = seed ? (on ? 0 : 1) : v;
      cells.push(h('td', {
        class: `cell ${on ? 'v1' : 'v0'}`,
        dataset: { row: i, col: j, value: v, shown },
        title: `${labels.rows[i]} → ${labels.cols[j]}: ${on ? 'may attend' : 'blocked'} (${shown})`,
      }, String(shown)));
    }
    body.push(h('tr', {},
      h('th', {
        scope: 'row',
        class: `row-label${labels.rows[i] === 'PAD' ? ' pad' : ''}`,
        title: labelTitle(labels.rows[i], key === 'kv_cache' ? i + labels.cached : i, key, labels.cached),
        dataset: { row: i },
      }, labels.rows[i]),
      cells));
  }

  return h('figure', {
    class: `matrix matrix-${density}${cols > 64 ? ' matrix-wide' : ''}`,
    dataset: { matrix: key, rows, cols },
  },
  h('figcaption', { id: captionId }, h('span', { class: 'matrix-title' }, title),
    h('span', { class: 'matrix-shape' }, ` ${rows} × ${cols}`)),
  h('div', { class: 'matrix-scroll', tabindex: '0', role: 'region', 'aria-labelledby': captionId },
    h('table', { class: 'mask', 'aria-labelledby': captionId },
      h('thead', {}, headRows),
      h('tbody', {}, body))),
  h('p', { class: 'matrix-explain' }, explain(m)));
}
