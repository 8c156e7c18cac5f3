// "Next token": the ten most likely next tokens with their probabilities after temperature, top-k and top-p,
// at the selected generation step (from the core's per-step report) or after the prompt (from forward()'s
// logits, with the same filtering as the core's sampler: softmax(logits / T), keep the top k, then the
// smallest set whose mass reaches p, renormalised).
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

/** The sampler's candidate probabilities from raw logits: a line-for-line twin of the core's candidate_probs
 * (src/model/run.rs), used for the prompt's last row where no generation step reported them. */
export function candidateProbs(logits, { temperature, top_k, top_p }) {
  const greedy = !(temperature > 0);
  const t = greedy ? 1 : temperature;
  let m = -Infinity;
  for (const l of logits) m = Math.max(m, l);
  let probs = Array.from(logits, (l) => Math.exp((l - m) / t));
  if (!greedy && top_k > 0 && top_k < logits.length) {
    const kth = Array.from(logits).sort((a, b) => b - a)[top_k - 1];
    probs = probs.map((p, i) => (logits[i] < kth ? 0 : p));
  }
  let z = probs.reduce((a, b) => a + b, 0);
  probs = probs.map((p) => p / z);
  if (!greedy && top_p < 1) {
    const sorted = [...probs].sort((a, b) => b - a);
    let acc = 0;
    let tau = 0;
    for (const x of sorted) {
      acc += x;
      tau = x;
      if (acc >= top_p) break;
    }
    probs = probs.map((p) => (p < tau ? 0 : p));
    z = probs.reduce((a, b) => a + b, 0);
    probs = probs.map((p) => p / z);
  }
  return probs;
}
