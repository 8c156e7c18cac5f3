// "Next token": the ten most likely next tokens with their probabilities after temperature, top-k and top-p,
// at the selected generation step (from the core's per-step report) or after the prompt (the core's
// `candidates` over forward()'s last row of logits). The probabilities always come from the core.
//
// State for tests: #next-root data-state "empty" | "generating" | "analysing" | "ready"; li.cand[data-id][data-p] (p as the core gave it)
import { h, replaceChildren } from '../dom.js';

export function createNextTokenView(root) {
  return {
    clear(message) {
      root.dataset.state = 'empty';
      replaceChildren(root, h('p', { class: 'muted' }, message));
    },

    /** Waiting for an analysis (stateName 'generating' | 'analysing'). */
    wait(message, stateName = 'analysing') {
      root.dataset.state = stateName;
      replaceChildren(root, h('p', { class: 'muted analysing', role: 'status' }, message));
    },

    /** cands: [{id, p, piece}] most likely first; title: what they are the candidates for; chosen: id or null */
    show(cands, { title, chosen = null, note = '' }) {
      root.dataset.state = 'ready';
      const max = Math.max(...cands.map((c) => c.p), 1e-9);
      replaceChildren(root,
        h('p', { class: 'small', id: 'next-title' }, title),
        h('ol', { class: 'cands', id: 'next-list' }, cands.map((c, i) => h('li', {
          class: `cand${c.id === chosen ? ' chosen' : ''}`,
          dataset: { id: c.id, p: c.p, rank: i },
        },
        h('code', { class: 'cand-piece' }, c.piece === '' ? '\u2205' : c.piece),
        h('span', { class: 'cand-bar', 'aria-hidden': 'true' },
          h('span', { class: 'cand-fill', style: `width: ${((100 * c.p) / max).toFixed(1)}%` })),
        h('span', { class: 'cand-p' }, `${(100 * c.p).toFixed(c.p < 0.001 ? 3 : 1)}%`),
        h('span', { class: 'cand-id muted small' }, `#${c.id}`),
        c.id === chosen ? h('span', { class: 'badge badge-ok' }, 'chosen') : null))),
        note ? h('p', { class: 'small muted' }, note) : null);
    },
  };
}
