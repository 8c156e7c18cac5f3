// "Experts" (MoE models): for each token, the router's probabilities over the experts and the chosen top-k
// (dropped assignments struck through), and the load per expert over the text so far, for one layer at a time.
// Data: forward()'s moe list [{layer, router_probs [T][E], experts [T][k], weights [T][k], kept [T][k]}].
//
// State for tests: #experts-root data-state "empty" | "generating" | "analysing" | "ready"; data-layer; data-focus
//   (the highlighted token row, "" for none);
//   tr[data-token=i] > td.ep[data-expert=e][data-p][data-rank (1-based when chosen)]; li.load[data-expert][data-count]
import { h, replaceChildren } from '../dom.js';

export function createExpertsView(root) {
  let d = null;
  let layer = 0;
  let focus = null;

  function draw() {
    const L = d.moe.find((x) => x.layer === layer) ?? d.moe[0];
    layer = L.layer;
    const T = L.router_probs.length;
    const E = L.router_probs[0]?.length ?? 0;
    const load = new Array(E).fill(0);
    let total = 0;
    for (let t = 0; t < T; t++) {
      L.experts[t].forEach((e, r) => {
        if (L.kept[t][r]) {
          load[e]++;
          total++;
        }
      });
    }
    const maxLoad = Math.max(...load, 1);
    const layers = h('div', { class: 'seg', role: 'group', 'aria-label': 'Layer' },
      d.moe.map((x) => h('button', {
        type: 'button', class: 'secondary', 'aria-pressed': String(x.layer === layer), dataset: { layer: x.layer },
        on: { click: () => { layer = x.layer; draw(); } },
      }, `Layer ${x.layer}`)));
    const head = h('tr', {}, h('th', { scope: 'col' }, 'token'),
      Array.from({ length: E }, (_, e) => h('th', { scope: 'col' }, `E${e}`)));
    const body = [];
    for (let t = 0; t < T; t++) {
      const ranks = new Map(L.experts[t].map((e, r) => [e, r]));
      body.push(h('tr', { dataset: { token: t }, class: focus === t ? 'focus' : null, 'aria-current': focus === t ? 'true' : null },
        h('th', { scope: 'row', class: 'tok-label' }, d.labels[t] ?? String(t)),
        Array.from({ length: E }, (_, e) => {
          const p = L.router_probs[t][e];
          const r = ranks.get(e);
          const chosen = r !== undefined;
          const dropped = chosen && !L.kept[t][r];
          return h('td', {
            class: `ep${chosen ? ' chosen' : ''}${dropped ? ' dropped' : ''}`,
            dataset: { expert: e, p, rank: chosen ? r + 1 : null },
            style: { '--p': p.toFixed(3) },
            title: `token ${t}, expert ${e}: router ${(100 * p).toFixed(1)}%` +
              (chosen ? `, choice ${r + 1} (weight ${L.weights[t][r].toFixed(3)})${dropped ? ', dropped: over capacity' : ''}` : ''),
          }, (100 * p).toFixed(0));
        })));
    }
    root.dataset.state = 'ready';
    root.dataset.layer = String(layer);
    root.dataset.focus = focus == null ? '' : String(focus);
    replaceChildren(root,
      h('p', { class: 'small' }, `${E} experts, top-${L.experts[0]?.length ?? '?'} per token. `,
        'Cells: router probability (%); outlined = chosen; struck through = dropped (expert over capacity).'),
      layers,
      h('h3', { class: 'subhead' }, `Load per expert, layer ${layer} (${total} kept assignments)`),
      h('ul', { class: 'loads', id: 'experts-load' }, load.map((c, e) => h('li', { class: 'load', dataset: { expert: e, count: c } },
        h('span', { class: 'load-name' }, `E${e}`),
        h('span', { class: 'load-bar', 'aria-hidden': 'true' }, h('span', { class: 'load-fill', style: { width: `${((100 * c) / maxLoad).toFixed(1)}%` } })),
        h('span', { class: 'load-n small' }, `${c} (${total ? ((100 * c) / total).toFixed(0) : 0}%)`)))),
      h('div', { class: 'table-scroll experts-scroll', tabindex: '0', role: 'region', 'aria-label': 'Routing per token' },
        h('table', { class: 'experts', id: 'experts-table' }, h('thead', {}, head), h('tbody', {}, body))));
    if (focus != null) root.querySelector(`tr[data-token="${focus}"]`)?.scrollIntoView({ block: 'nearest' });
  }

  return {
    clear(message) {
      d = null;
      root.dataset.state = 'empty';
      replaceChildren(root, h('p', { class: 'muted' }, message));
    },
    /** Waiting for an analysis ('generating' | 'analysing'); message null: nothing to wait for (no experts). */
    wait(message, stateName = 'analysing') {
      if (message == null) return;
      d = null;
      root.dataset.state = stateName;
      replaceChildren(root, h('p', { class: 'muted analysing', role: 'status' }, message));
    },
    /** data: {moe, labels (one per token)}; focusToken: a token index to highlight, or null */
    show(data, focusToken = null) {
      d = data;
      focus = focusToken;
      if (!d.moe?.length) {
        this.clear('This model has no experts: every token goes through the same feed-forward network.');
        return;
      }
      draw();
    },
    setFocus(t) {
      focus = t;
      if (d?.moe?.length) draw();
    },
  };
}
