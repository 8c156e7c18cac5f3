// "Attention": tabs for the kinds the model has (encoder self, decoder self, cross), a grid of thumbnails
// (layers x heads), the selected head as a large heatmap (token labels, hover/keyboard tooltip, blocked cells
// hatched), a head view (hover a query token: lines to the keys it attends to, weighted), a step scrubber
// through the generation, the GQA query-head -> KV-head mapping, and Export (PNG of the heatmap, JSON of the
// head's weights). Everything drawn comes from the core's forward() output.
//
// Long sequences: the heatmap labels every k-th token (k grows as the cells shrink), "Show" zooms to a window of
// 64 or 32 tokens that #attn-window scrolls, and a selected step's row is kept inside the window.
//
// State for tests on #attention-root: data-state "empty" | "generating" | "analysing" | "ready"; data-kind,
// data-layer, data-head, data-step ("" = all rows), data-window "r0,r1" (the query rows drawn); buttons
// #attn-export-png, #attn-export-json; .thumb[data-layer][data-head]; the canvas's data-* (see heatmap.js).
import { h, replaceChildren, roving } from '../dom.js';
import { drawThumbnail, drawHeatmap, heatmapLayout, cellAt } from './heatmap.js';

const KIND_NAMES = { encoder: 'Encoder self-attention', decoder: 'Decoder self-attention', cross: 'Cross-attention' };
const THUMB = 72;

/** 2 -> "2nd", 5 -> "5th", 21 -> "21st" (labelEvery is 1, 2, 5, 10, 20, 50, ...). */
function ordinal(n) {
  const tail = n % 100 >= 11 && n % 100 <= 13 ? 'th' : ({ 1: 'st', 2: 'nd', 3: 'rd' })[n % 10] ?? 'th';
  return `${n}${tail}`;
}

export function createAttentionView(root, { onSelectStep }) {
  let d = null;          // {maps, masks, labels, heads, kvHeads, model, steps, stepRow}
  let kind = null;
  let layer = 0;
  let head = 0;
  let step = null;       // selected generation step, or null for every row
  let cursor = null;     // keyboard cursor on the heatmap
  let layout = null;
  let thumbJob = 0;
  let els = null;
  let zoomChoice = 'auto'; // 'auto' | 'all' | '64' | '32': how many tokens of the sequence the heatmap shows
  let winStart = 0;        // first row (and, for self-attention, column) of the zoomed window
  let follow = true;       // bring the selected step's row (or the cursor) into the window at the next draw

  function mapsOf(k) {
    return d.maps.filter((m) => m.kind === k).sort((a, b) => a.layer - b.layer);
  }
  function current() {
    return mapsOf(kind).find((m) => m.layer === layer) ?? null;
  }
  function maskFor(k, m) {
    const mk = d.masks?.[k];
    return mk && mk.rows === m.rows && mk.cols === m.cols ? mk : null;
  }
  function labelsFor(k) {
    return d.labels[k] ?? { rows: [], cols: [] };
  }
  // The row whose query produced the selected step's token (null: no step or not on the generation side).
  function focusRow() {
    if (step == null || kind === 'encoder' || !d.stepRow) return null;
    const r = d.stepRow(step);
    const m = current();
    return m && r >= 0 && r < m.rows ? r : null;
  }
  function kvHeadOf(hd) {
    if (!d.kvHeads || d.kvHeads >= d.heads || kind !== 'decoder') return null;
    return Math.floor(hd / (d.heads / d.kvHeads));
  }

  function build() {
    const kinds = [...new Set(d.maps.map((m) => m.kind))].sort((a, b) => Object.keys(KIND_NAMES).indexOf(a) - Object.keys(KIND_NAMES).indexOf(b));
    if (!kinds.includes(kind)) kind = kinds.includes('decoder') ? 'decoder' : kinds[0];
    const tabs = h('div', { class: 'tabs', role: 'tablist', 'aria-label': 'Attention kind' },
      kinds.map((k) => h('button', {
        type: 'button', role: 'tab', id: `attn-tab-${k}`, class: 'tab',
        'aria-selected': String(k === kind), tabindex: k === kind ? '0' : '-1', dataset: { kind: k },
        on: { click: () => setKind(k), keydown: (e) => tabKeys(e, kinds) },
      }, KIND_NAMES[k] ?? k)));
    const thumbs = h('div', { class: 'thumbs', id: 'attn-thumbs', role: 'group', 'aria-label': 'Layers by heads (arrow keys move, Enter shows)' });
    // One Tab stop for the thumbnails; the arrow keys move (Up/Down: the same head one layer away).
    roving(thumbs, '.thumb', { cols: () => mapsOf(kind)[0]?.heads ?? 1 });
    const canvas = h('canvas', { id: 'attn-heatmap', class: 'heatmap', tabindex: '0', role: 'img' });
    const tip = h('div', { class: 'tooltip', id: 'attn-tooltip', hidden: true, role: 'status' });
    const caption = h('p', { class: 'heat-caption', id: 'attn-caption' });
    const gqa = h('div', { class: 'gqa', id: 'attn-gqa' });
    const scrub = h('div', { class: 'scrubber', id: 'attn-scrubber' });
    const headView = h('div', { class: 'headview', id: 'attn-headview' });
    const exportPng = h('button', { type: 'button', class: 'secondary', id: 'attn-export-png', on: { click: exportPNG } }, 'Export PNG');
    const exportJson = h('button', { type: 'button', class: 'secondary', id: 'attn-export-json', on: { click: exportJSON } }, 'Export JSON');
    const zoom = h('select', { id: 'attn-zoom', 'aria-label': 'How much of the sequence the heatmap shows' },
      [['auto', 'fit to the width'], ['all', 'the whole sequence'], ['64', '64 tokens'], ['32', '32 tokens']].map(([v, t]) =>
        h('option', { value: v, selected: v === zoomChoice }, t)));
    const windowRange = h('input', { type: 'range', id: 'attn-window', min: 0, max: 0, step: 1, value: 0, 'aria-label': 'First token of the window' });
    const windowLabel = h('span', { class: 'small muted', id: 'attn-window-label' });
    const zoomBar = h('div', { class: 'toolbar heat-zoom', id: 'attn-zoom-bar' },
      h('label', { class: 'small' }, 'Show ', zoom), windowRange, windowLabel);
    zoom.addEventListener('change', () => { zoomChoice = zoom.value; follow = true; drawMain(); });
    windowRange.addEventListener('input', () => { winStart = Number(windowRange.value); drawMain(); });
    els = { tabs, thumbs, canvas, tip, caption, gqa, scrub, headView, zoomBar, windowRange, windowLabel };
    replaceChildren(root,
      tabs,
      d.note ? h('p', { class: 'small notice-inline', id: 'attn-window-note' }, d.note) : null,
      h('div', { class: 'attn-layout' },
        h('div', { class: 'attn-left' }, h('h3', { class: 'subhead' }, 'Layers × heads'), thumbs, gqa),
        h('div', { class: 'attn-main' },
          caption,
          zoomBar,
          h('div', { class: 'heat-wrap' }, canvas, tip),
          h('p', { class: 'legend small' },
            h('span', { class: 'swatch heat-lo', 'aria-hidden': 'true' }), ' 0 ',
            h('span', { class: 'swatch heat-hi', 'aria-hidden': 'true' }), ' 1 (square-root scale) ',
            h('span', { class: 'swatch heat-blocked', 'aria-hidden': 'true' }), ' blocked by the mask'),
          h('div', { class: 'toolbar' }, exportPng, exportJson))),
      scrub,
      h('h3', { class: 'subhead' }, 'Head view'),
      h('p', { class: 'small muted' }, 'Hover or focus a query token (left) to draw lines to the keys it attends to; thicker and darker = more weight.'),
      headView);
    canvas.addEventListener('mousemove', (e) => hover(e));
    canvas.addEventListener('mouseleave', () => { tip.hidden = true; });
    canvas.addEventListener('keydown', canvasKeys);
    canvas.addEventListener('blur', () => { cursor = null; tip.hidden = true; if (d) drawMain(); });
  }

  function tabKeys(e, kinds) {
    const i = kinds.indexOf(kind);
    let k = null;
    if (e.key === 'ArrowRight') k = kinds[(i + 1) % kinds.length];
    else if (e.key === 'ArrowLeft') k = kinds[(i - 1 + kinds.length) % kinds.length];
    if (k) {
      e.preventDefault();
      setKind(k);
      root.querySelector(`#attn-tab-${k}`)?.focus();
    }
  }

  function setKind(k) {
    kind = k;
    const ms = mapsOf(k);
    if (!ms.some((m) => m.layer === layer)) layer = ms[0]?.layer ?? 0;
    for (const b of els.tabs.querySelectorAll('[role=tab]')) {
      const on = b.dataset.kind === k;
      b.setAttribute('aria-selected', String(on));
      b.tabIndex = on ? 0 : -1;
    }
    drawAll();
  }

  function select(l, hd) {
    layer = l;
    head = hd;
    for (const b of els.thumbs.querySelectorAll('.thumb')) {
      const on = Number(b.dataset.layer) === l && Number(b.dataset.head) === hd;
      b.setAttribute('aria-pressed', String(on));
      b.tabIndex = on ? 0 : -1; // the chosen head is the thumbnails' one Tab stop
    }
    drawMain();
    drawHeadView();
    syncState();
  }

  function syncState() {
    root.dataset.state = 'ready';
    root.dataset.kind = kind;
    root.dataset.layer = String(layer);
    root.dataset.head = String(head);
    root.dataset.step = step == null ? '' : String(step);
  }

  function drawAll({ scrubber = true } = {}) {
    const ms = mapsOf(kind);
    const heads = ms[0]?.heads ?? 0;
    if (head >= heads) head = 0;
    // Thumbnails: the grid is built at once, the canvases are painted a few per frame.
    els.thumbs.style.setProperty('--heads', String(heads));
    const buttons = [];
    for (const m of ms) {
      buttons.push(h('span', { class: 'thumb-layer', 'aria-hidden': 'true' }, `L${m.layer}`));
      for (let hd = 0; hd < m.heads; hd++) {
        const kv = kvHeadOf(hd);
        buttons.push(h('button', {
          type: 'button', class: 'thumb', dataset: { layer: m.layer, head: hd },
          'aria-pressed': String(m.layer === layer && hd === head),
          tabindex: m.layer === layer && hd === head ? '0' : '-1', // the grid is one Tab stop: arrows move inside
          'aria-label': `layer ${m.layer}, head ${hd}${kv != null ? `, reads KV head ${kv}` : ''}`,
          on: { click: () => select(m.layer, hd) },
        }, h('canvas', { width: THUMB, height: THUMB, 'aria-hidden': 'true' }),
        h('span', { class: 'thumb-label', 'aria-hidden': 'true' }, kv != null ? `h${hd}·kv${kv}` : `h${hd}`)));
      }
    }
    replaceChildren(els.thumbs, buttons);
    const job = ++thumbJob;
    const canvases = [...els.thumbs.querySelectorAll('.thumb')];
    const fr = focusRow();
    let idx = 0;
    const paint = () => {
      if (job !== thumbJob) return;
      const t0 = performance.now();
      while (idx < canvases.length && performance.now() - t0 < 8) {
        const b = canvases[idx++];
        const m = ms.find((x) => x.layer === Number(b.dataset.layer));
        drawThumbnail(b.querySelector('canvas'), m, Number(b.dataset.head), maskFor(kind, m), fr);
      }
      if (idx < canvases.length) requestAnimationFrame(paint);
    };
    requestAnimationFrame(paint);
    drawGqa();
    if (scrubber) drawScrubber();
    drawMain();
    drawHeadView();
    syncState();
  }

  function drawGqa() {
    const kv = d.kvHeads;
    if (kind !== 'decoder' || !kv || kv >= d.heads) {
      replaceChildren(els.gqa);
      return;
    }
    const group = d.heads / kv;
    replaceChildren(els.gqa,
      h('p', { class: 'small' }, h('strong', {}, 'Grouped-query attention: '),
        `${d.heads} query heads share ${kv} KV head${kv === 1 ? '' : 's'} (${group} per group).`),
      h('ul', { class: 'gqa-map', id: 'attn-gqa-map' }, Array.from({ length: kv }, (_, k) =>
        h('li', { dataset: { kvHead: k } }, `KV head ${k} ← query heads `,
          Array.from({ length: group }, (_, g) => k * group + g).join(', ')))));
  }

  function drawScrubber() {
    const n = d.steps?.length ?? 0;
    if (n === 0 || kind === 'encoder') {
      replaceChildren(els.scrub, n === 0 ? null : h('p', { class: 'small muted' }, 'The encoder reads the source once: no generation steps here.'));
      return;
    }
    const range = h('input', { type: 'range', id: 'attn-step', min: 0, max: n - 1, step: 1, value: step ?? n - 1, 'aria-label': 'Generation step' });
    const all = h('button', { type: 'button', class: 'secondary', id: 'attn-step-all', 'aria-pressed': String(step == null) }, 'All rows');
    const label = h('span', { class: 'small', id: 'attn-step-label' });
    range.addEventListener('input', () => onSelectStep(Number(range.value)));
    all.addEventListener('click', () => onSelectStep(null));
    replaceChildren(els.scrub, h('label', { for: 'attn-step', class: 'small' }, 'Step'), range, all, label);
    updateStepLabel();
  }

  function updateStepLabel() {
    const label = els.scrub.querySelector('#attn-step-label');
    if (!label) return;
    if (step == null) {
      label.textContent = `all ${d.steps.length} generated tokens`;
      return;
    }
    const r = d.stepRow(step);
    const L = labelsFor(kind);
    const piece = d.steps[step];
    if (piece === undefined) {
      label.textContent = `step ${step}: not in this analysis`;
    } else if (r < 0) {
      label.textContent = `step ${step}: ${JSON.stringify(piece)} was chosen by a query row before the analysed window (forgotten by the sliding window)`;
    } else {
      label.textContent = `step ${step}: ${JSON.stringify(piece)} was chosen by query row ${r} (${JSON.stringify(L.rows[r] ?? '')})`;
    }
  }

  // The window of the matrix to draw: everything, or `size` query rows (and, for self-attention, the same key
  // columns) starting at winStart, moved so that the selected step's row (or the keyboard cursor) is inside.
  function viewFor(m, width) {
    const n = Math.max(m.rows, m.cols);
    let size = zoomChoice === 'all' ? null : zoomChoice === 'auto' ? null : Number(zoomChoice);
    if (zoomChoice === 'auto' && (width - 92) / n < 2) size = (width - 92) / 64 >= 4 ? 64 : 32; // too small to read
    if (size == null || size >= n) return { r0: 0, r1: m.rows, c0: 0, c1: m.cols, size: null };
    size = Math.min(size, m.rows);
    const keep = cursor?.i ?? focusRow();
    if (follow && keep != null && (keep < winStart || keep >= winStart + size)) winStart = keep - Math.floor(size / 2);
    follow = false; // until the step, the cursor or the zoom changes: the user may scroll the window away
    winStart = Math.max(0, Math.min(m.rows - size, winStart));
    const square = m.rows === m.cols;
    const c0 = square ? winStart : 0;
    return { r0: winStart, r1: winStart + size, c0, c1: square ? winStart + size : Math.min(m.cols, size), size };
  }

  function drawMain() {
    const m = current();
    if (!m) return;
    const L = labelsFor(kind);
    const width = Math.max(260, Math.min(680, els.canvas.parentElement.clientWidth || 600));
    const view = viewFor(m, width);
    layout = heatmapLayout(m.rows, m.cols, { maxWidth: width, view });
    els.zoomBar.hidden = Math.max(m.rows, m.cols) <= 32;
    els.windowRange.hidden = view.size == null;
    els.windowRange.max = String(Math.max(0, m.rows - (view.size ?? m.rows)));
    els.windowRange.value = String(view.r0);
    els.windowLabel.textContent = view.size == null
      ? `all ${m.rows} × ${m.cols}${layout.labelEvery > 1 ? `, every ${ordinal(layout.labelEvery)} token labelled (hover for each)` : ''}`
      : `queries ${view.r0}–${view.r1 - 1}, keys ${view.c0}–${view.c1 - 1} of ${m.cols}`;
    root.dataset.window = `${view.r0},${view.r1}`;
    const fr = focusRow();
    drawHeatmap(els.canvas, {
      m, head, mask: maskFor(kind, m), rowLabels: L.rows, colLabels: L.cols, layout,
      maxRow: fr, focusRow: fr, cursor,
    });
    const kv = kvHeadOf(head);
    const text = `${KIND_NAMES[kind]}, L${layer} H${head}${kv != null ? ` (reads KV head ${kv})` : ''}: ${m.rows} queries × ${m.cols} keys`;
    els.caption.textContent = text;
    els.canvas.setAttribute('aria-label', `${text}. Use the arrow keys to read cell values.`);
  }

  function cellText(i, j) {
    const m = current();
    const L = labelsFor(kind);
    const mask = maskFor(kind, m);
    const q = `query ${i} ${JSON.stringify(L.rows[i] ?? '')}`;
    const k = `key ${j} ${JSON.stringify(L.cols[j] ?? '')}`;
    const v = m.data[head * m.rows * m.cols + i * m.cols + j];
    return mask && mask.data[i * m.cols + j] === 0 ? `${q} → ${k}: blocked by the mask (weight ${v})` : `${q} → ${k}: ${v.toFixed(4)}`;
  }

  function showTip(i, j, x, y) {
    els.tip.textContent = cellText(i, j);
    els.tip.dataset.row = String(i);
    els.tip.dataset.col = String(j);
    els.tip.hidden = false;
    const wrap = els.canvas.parentElement;
    const maxX = wrap.clientWidth - els.tip.offsetWidth - 4;
    els.tip.style.left = `${Math.max(0, Math.min(maxX, x + 12))}px`;
    els.tip.style.top = `${y + 14}px`;
  }

  function hover(e) {
    const m = current();
    if (!m || !layout) return;
    const rect = els.canvas.getBoundingClientRect();
    const scale = layout.width / rect.width;
    const x = (e.clientX - rect.left) * scale;
    const y = (e.clientY - rect.top) * scale;
    const c = cellAt(layout, m.rows, m.cols, x, y);
    if (!c) {
      els.tip.hidden = true;
      return;
    }
    showTip(c.i, c.j, e.clientX - rect.left, e.clientY - rect.top);
  }

  function canvasKeys(e) {
    const m = current();
    if (!m) return;
    const moves = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
    if (!moves[e.key]) return;
    e.preventDefault();
    cursor ??= { i: 0, j: 0 };
    cursor = {
      i: Math.max(0, Math.min(m.rows - 1, cursor.i + moves[e.key][0])),
      j: Math.max(0, Math.min(m.cols - 1, cursor.j + moves[e.key][1])),
    };
    follow = true;
    drawMain();
    const rect = els.canvas.getBoundingClientRect();
    const s = rect.width / layout.width;
    const v = layout.view;
    showTip(cursor.i, cursor.j, (layout.left + (cursor.j - v.c0 + 1) * layout.cell) * s, (layout.top + (cursor.i - v.r0) * layout.cell) * s);
  }

  function drawHeadView() {
    const m = current();
    if (!m) return;
    const L = labelsFor(kind);
    const ROW = 20;
    const n = Math.max(m.rows, m.cols);
    const svgNS = 'http://www.w3.org/2000/svg';
    const svg = document.createElementNS(svgNS, 'svg');
    svg.setAttribute('class', 'headview-lines');
    svg.setAttribute('height', String(n * ROW));
    svg.setAttribute('aria-hidden', 'true');
    // The query tokens are one Tab stop (the shown row); the arrow keys move between them and draw their lines.
    const shownRow = focusRow() ?? m.rows - 1;
    const queries = h('ol', { class: 'hv-col hv-queries', 'aria-label': 'Queries (arrow keys move)' },
      Array.from({ length: m.rows }, (_, i) => h('li', {},
        h('button', { type: 'button', class: 'hv-tok', tabindex: i === shownRow ? '0' : '-1', dataset: { row: i } }, L.rows[i] ?? String(i)))));
    roving(queries, '.hv-tok');
    const keys = h('ol', { class: 'hv-col hv-keys', 'aria-label': 'Keys' },
      Array.from({ length: m.cols }, (_, j) => h('li', { class: 'hv-key', dataset: { col: j } }, L.cols[j] ?? String(j))));
    const mask = maskFor(kind, m);
    const drawLines = (i) => {
      svg.replaceChildren();
      const w = svg.clientWidth || 120;
      const base = head * m.rows * m.cols + i * m.cols;
      for (let j = 0; j < m.cols; j++) {
        const v = m.data[base + j];
        if (v < 0.01 || (mask && mask.data[i * m.cols + j] === 0)) continue;
        const line = document.createElementNS(svgNS, 'line');
        line.setAttribute('x1', '0');
        line.setAttribute('y1', String(i * ROW + ROW / 2));
        line.setAttribute('x2', String(w));
        line.setAttribute('y2', String(j * ROW + ROW / 2));
        line.setAttribute('stroke-width', String(0.5 + 5 * v));
        line.setAttribute('stroke-opacity', String(Math.min(1, 0.15 + v)));
        svg.append(line);
      }
      for (const b of queries.querySelectorAll('.hv-tok')) b.classList.toggle('active', Number(b.dataset.row) === i);
      for (const k of keys.children) {
        const v = m.data[base + Number(k.dataset.col)];
        k.style.setProperty('--w', String(Math.sqrt(v)));
        k.title = `weight ${v.toFixed(4)}`;
      }
      els.headView.dataset.row = String(i);
    };
    queries.addEventListener('mouseover', (e) => {
      const b = e.target.closest('.hv-tok');
      if (b) drawLines(Number(b.dataset.row));
    });
    queries.addEventListener('focusin', (e) => {
      const b = e.target.closest('.hv-tok');
      if (b) drawLines(Number(b.dataset.row));
    });
    const scroller = h('div', { class: 'hv-scroll' }, queries, svg, keys);
    replaceChildren(els.headView, scroller);
    requestAnimationFrame(() => {
      const row = shownRow;
      drawLines(row);
      // Bring the shown query into view inside the box (not the page).
      scroller.scrollTop = Math.max(0, row * ROW - scroller.clientHeight / 2);
    });
  }

  function filename(ext) {
    return `attention-${d.model ?? 'model'}-${kind}-L${layer}-H${head}.${ext}`;
  }

  function download(blob, name) {
    const url = URL.createObjectURL(blob);
    const a = h('a', { href: url, download: name, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  }

  function exportPNG() {
    els.canvas.toBlob((blob) => blob && download(blob, filename('png')), 'image/png');
  }

  /** The selected head as plain JSON: tokens, kind, layer, head, weights [query][key], mask [query][key]. */
  function exportObject() {
    const m = current();
    const L = labelsFor(kind);
    const mask = maskFor(kind, m);
    const rows = [];
    const maskRows = [];
    for (let i = 0; i < m.rows; i++) {
      const off = head * m.rows * m.cols + i * m.cols;
      rows.push(Array.from(m.data.subarray(off, off + m.cols)));
      maskRows.push(mask ? Array.from(mask.data.subarray(i * m.cols, (i + 1) * m.cols)) : Array(m.cols).fill(1));
    }
    return {
      model: d.model, kind, layer, head, kv_head: kvHeadOf(head), heads: m.heads,
      rows: m.rows, cols: m.cols, row_offset: m.row_offset,
      tokens: { queries: L.rows.slice(0, m.rows), keys: L.cols.slice(0, m.cols) },
      mask_convention: '1 = may attend, 0 = blocked',
      weights: rows, mask: maskRows,
    };
  }

  function exportJSON() {
    download(new Blob([JSON.stringify(exportObject(), null, 1)], { type: 'application/json' }), filename('json'));
  }

  let resizeTimer = null;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => d && current() && drawMain(), 150);
  });

  return {
    /** data: {maps, masks, labels: {kind: {rows, cols}}, heads, kvHeads, model, steps: [piece], stepRow(step)} */
    show(data) {
      d = data;
      if (!d.maps?.length) {
        this.clear('This model gave no attention maps.');
        return;
      }
      if (step != null && step >= (d.steps?.length ?? 0)) step = null;
      cursor = null;
      build();
      drawAll();
    },

    clear(message) {
      d = null;
      thumbJob++;
      root.dataset.state = 'empty';
      replaceChildren(root, h('p', { class: 'muted' }, message));
    },

    /** Waiting for an analysis (stateName 'generating' | 'analysing'): nothing of an earlier run stays on screen. */
    wait(message, stateName = 'analysing') {
      d = null;
      thumbJob++;
      root.dataset.state = stateName;
      replaceChildren(root, h('p', { class: 'muted analysing', role: 'status' }, message));
    },

    setStep(s) {
      step = s;
      follow = true;
      if (!d) return;
      const range = els.scrub.querySelector('#attn-step');
      if (range && s != null) range.value = String(s);
      els.scrub.querySelector('#attn-step-all')?.setAttribute('aria-pressed', String(s == null));
      updateStepLabel();
      drawAll({ scrubber: false });
    },

    exportObject: () => (d ? exportObject() : null),
  };
}
