// "Inspect": the logit lens, head detector scores, residual norms, attention entropy, per-token
// surprise and head ablation. Every number comes from the core's inspect() (src/model/analysis/inspect.rs), which the
// controller (app.js) asks for when this view emits a request; this view only lays the answers out and colours them.
//
// State for tests: #inspect-root data-state "empty" | "running" | "ready" | "error";
//   td.lens-cell[data-layer][data-pos][data-id][data-p]; button.head-cell[data-kind][data-layer][data-head][data-score]
//   (aria-pressed when chosen for ablation); td.entropy-cell[data-layer][data-head][data-mean]
//   (click: aria-selected, its row below); #inspect-entropy-strip[data-layer][data-head] td.entropy-pos[data-pos][data-entropy];
//   td.norm-cell[data-layer][data-pos][data-norm];
//   #inspect-surprise[data-ids] (the inspected ids: the decoder's for the encoder-decoder) span.surprise-tok[data-pos][data-surprise]; #inspect-ablation[data-kl][data-top1-before][data-top1-after];
//   button.mask-cell[data-q][data-k] (aria-pressed when blocked) in #inspect-cells;
//   button.cross-cell[data-q][data-k] (decoder query, source key; aria-pressed when blocked) in #inspect-xcells;
//   #inspect-induction-result[data-first][data-second][data-second-ablated]; #inspect-generated[data-ids].
import { h, replaceChildren, visible, count, roving } from '../dom.js';

const KINDS = [
  ['previous_token', 'Previous token'],
  ['duplicate_token', 'Duplicate token'],
  ['induction', 'Induction'],
];

// What each head detector looks for: the share of a head's attention, over all positions, that lands where the
// pattern says (0 = none, 1 = all of it; src/model/analysis/inspect.rs, TransformerLens's head detector).
const KIND_MEANING = {
  previous_token: 'attention from each token to the token just before it.',
  duplicate_token: 'attention from a token to earlier copies of the same token.',
  induction: 'attention from a token to the token that followed an earlier copy of it, the pattern that lets a model ' +
    'continue a repeat. On the Induction test about 0.5 is the most a head can score: the first copy\u2019s tokens have no earlier copy to find.',
};

/** A head as the page, the CLI (--ablate 1.0) and the ablation list name it, counted from 0: "L1 H0". */
export const headName = (l, hd) => `L${l} H${hd}`;
const keyName = (key) => headName(...key.split('.'));

const fmt = (x, d = 2) => (x == null ? '' : Number(x).toFixed(d));

/** A cell colour from a value in [0, 1] (the page's accent at that opacity). */
function shade(x) {
  const a = Math.max(0, Math.min(1, x));
  return { background: `rgba(37, 99, 235, ${(0.08 + 0.72 * a).toFixed(3)})`, color: a > 0.55 ? '#fff' : '#111' };
}

/**
 * onInspect(request): the view wants the core's report for request {ids, tgt, opts} (the 'inspect' action,
 * www/protocol.js); the answer comes back through showReport(request, report) or showError(request, message).
 * onGenerate(request): greedy generation with the ablation on, request {ids, opts} ('generate_ablated'); the
 * answer comes back through showGenerated(request, {ids, text}) or showGenerateError(request, message).
 */
export function createInspectView(root, { onInspect, onGenerate }) {
  let input = null;     // {ids, tgt, card}
  let report = null;    // last {report, pieces, induction_test?}
  let pending = null;   // the newest inspect request: an older answer that lands late draws nothing
  const generating = new WeakMap(); // generate request -> {out, what}: where its answer goes and what was ablated
  let chosen = new Set(); // "L.H" chosen for ablation
  let entHead = [0, 0];   // the head whose per-position entropy is shown
  let cells = new Set();  // "Q.K" self-attention mask cells chosen to block
  let xcells = new Set(); // "Q.K" cross-attention cells (decoder query, source key) chosen to block

  const piece = (id) => visible(report?.pieces?.[id] ?? `#${id}`);
  // Each grid of cells (a head-score grid, the entropy grid, a block-cells grid) is one Tab stop: the arrow keys move
  // inside it, Enter or Space presses the cell (dom.js roving()).
  const grids = roving(root, 'button.head-cell, td.entropy-cell, button.mask-cell, button.cross-cell', { scope: 'table' });

  function status(text, state) {
    root.dataset.state = state;
    replaceChildren(root, h('p', { class: state === 'error' ? 'error' : 'muted', role: 'status' }, text));
  }

  function run({ induction = false, ablate = false } = {}) {
    if (!input) return;
    pending = null;
    const experts = ablate ? chosenExperts() : [];
    if (experts === null) return;
    const opts = ablate && (chosen.size || experts.length || cells.size || xcells.size) ? ablation(experts) : {};
    if (induction) {
      opts.induction = Math.max(2, Math.min(32, Math.floor(input.card.context / 2)));
      opts.seed = 0;
    }
    root.dataset.state = 'running';
    root.querySelector('#inspect-status')?.replaceChildren('Running the model with hooks…');
    pending = { ids: input.ids, tgt: input.tgt, opts };
    onInspect(pending);
  }

  /** The ablation chosen here (heads, `experts`, attention cells, mode) as the core's options. */
  function ablation(experts) {
    const pairs = (set) => [...set].map((k) => k.split('.').map(Number));
    return {
      ablate: pairs(chosen), experts, mask_cells: pairs(cells), cross_cells: pairs(xcells),
      mode: root.querySelector('#inspect-mode')?.value ?? 'zero',
    };
  }

  /** The "remove experts" field as [[layer, expert]], or null (and a message) when it does not parse. */
  function chosenExperts() {
    const field = root.querySelector('#inspect-experts');
    if (!field || !field.value.trim()) return [];
    const pairs = field.value.split(/[\s,]+/).filter(Boolean).map((p) => p.split('.').map(Number));
    if (pairs.some((p) => p.length !== 2 || !p.every(Number.isInteger))) {
      root.querySelector('#inspect-chosen').textContent = `"${field.value}" is not a list of LAYER.EXPERT (e.g. 0.1, 2.3).`;
      return null;
    }
    return pairs;
  }

  function generateAblated() {
    if (!input || !canAblate()) return;
    const out = root.querySelector('#inspect-generated');
    out.textContent = 'Generating with the ablation on…';
    const experts = chosenExperts();
    if (experts === null) return;
    const opts = { ...ablation(experts), max_new_tokens: 24 };
    const what = [...[...chosen].map(keyName), ...[...cells].map((k) => `cell ${k.replace('.', '\u2192')}`),
      ...[...xcells].map((k) => `cross cell ${k.replace('.', '\u2192')}`), ...experts.map(([l, e]) => `expert ${l}.${e}`)];
    const src = report?.induction_test ? report.report.ids : input.ids;
    const request = { ids: input.card.arch === 'encoder_decoder' ? input.ids : src, opts };
    generating.set(request, { out, what });
    onGenerate(request);
  }

  function tryThis(text) {
    return h('p', { class: 'small try-this' }, h('strong', {}, 'Try this: '), text);
  }

  function lensTable(layers, positions, title, id) {
    const r = report.report;
    return h('div', {}, h('p', { class: 'small muted grid-note' }, title), h('div', { class: 'table-scroll' }, h('table', { class: 'inspect-grid', id },
      h('thead', {}, h('tr', {}, h('th', {}, 'layer \\ token'), positions.map((p) => h('th', { class: 'tok-head' }, piece(r.ids[p]))))),
      h('tbody', {}, layers.map((l) => h('tr', {},
        h('th', {}, `after ${l.layer}`),
        positions.map((p) => {
          const id = l.top_ids[p][0];
          const pr = l.top_probs[p][0];
          const next = r.ids[p + 1];
          const tip = l.top_ids[p].map((t, k) => `${piece(t)} ${(100 * l.top_probs[p][k]).toFixed(1)}%`).join('\n');
          return h('td', {
            class: `lens-cell${next === id ? ' lens-hit' : ''}`, title: tip, style: shade(pr),
            dataset: { layer: l.layer, pos: p, id, p: pr },
          }, h('span', { class: 'lens-piece' }, piece(id)), h('span', { class: 'lens-p' }, fmt(100 * pr, 0)));
        })))))));
  }

  function render(mode) {
    const r = report.report;
    const card = input.card;
    const t = r.ids.length;
    // long sequences: the lens shows the last 24 positions (the model computed all of them)
    const positions = [...Array(t).keys()].slice(Math.max(0, t - 24));
    root.dataset.state = 'ready';
    const scores = r.head_scores;
    const top = (kind) => {
      let best = null;
      scores[kind].forEach((row, l) => row.forEach((s, hd) => { if (!best || s > best.s) best = { l, hd, s }; }));
      return best;
    };
    const it = report.induction_test;
    const ab = r.ablation;
    const meanEntropy = r.attention_entropy.map((heads) => heads.map((row) => row.reduce((a, b) => a + b, 0) / row.length));
    const maxNorm = Math.max(...r.residual_norms.flat(), 1e-9);
    const maxSurprise = Math.max(...r.surprise, 1e-9);
    const last = r.logit_lens[r.logit_lens.length - 1];
    replaceChildren(root,
      h('div', { class: 'inspect-controls' },
        h('button', { type: 'button', id: 'inspect-run', on: { click: () => run() } }, 'Inspect the prompt'),
        h('button', { type: 'button', id: 'inspect-induction', on: { click: () => run({ induction: true }) } }, 'Induction test'),
        h('span', { id: 'inspect-status', class: 'small muted' },
          it ? `Induction test: ${count(it.half.length, 'random token')}, twice.` : `The ${card.arch === 'encoder_decoder' ? 'decoder input' : 'prompt'}, ${count(t, 'token')}.`)),

      h('p', { class: 'small explain', id: 'inspect-units' }, 'Heads are named L(layer) H(head), both counted from 0. ',
        h('strong', {}, 'Nats'), ' measure loss, surprise and entropy with the natural logarithm: a token the model gave ',
        'probability p costs \u2212ln p nats, so 0 is a sure guess, 0.69 a 50% one and 2.3 a 10% one.'),

      h('h3', {}, 'Logit lens'),
      h('p', { class: 'small explain' }, 'The logit lens reads the model\u2019s guess for the next token part-way through: ',
        'the residual stream after each block goes through the final norm and the unembedding, as if the model ended there.'),
      tryThis('find the first layer whose top guess is already the model\u2019s final answer; outlined cells guessed the next token right.'),
      lensTable(r.logit_lens, positions, 'Top-1 token (and %) after each block: the final norm and the unembedding applied to the residual. Hover for the top 5.', 'inspect-lens'),
      h('details', {}, h('summary', { class: 'small' }, 'After the attention half of each block'),
        lensTable(r.logit_lens_mid, positions, 'The same lens, read after attention and before the feed-forward.', 'inspect-lens-mid')),

      h('h3', {}, 'Head detectors'),
      h('p', { class: 'small explain' }, 'Each score, from 0 to 1, is the share of a head\u2019s attention (over all positions) that follows one pattern:'),
      h('ul', { class: 'small explain detector-meanings', id: 'inspect-detector-meanings' },
        KINDS.map(([k, name]) => h('li', { dataset: { kind: k } }, h('strong', {}, `${name}: `), KIND_MEANING[k]))),
      tryThis('press Induction test, then click the top induction head and Rerun with ablation: the second-half loss goes back up.'),
      h('p', { class: 'small', id: 'inspect-top-heads' }, KINDS.map(([k, name]) => {
        const b = top(k);
        return h('span', { class: 'top-head', dataset: { kind: k, layer: b.l, head: b.hd } }, `${name}: ${headName(b.l, b.hd)}, score ${fmt(b.s)}`);
      })),
      // Each grid scrolls sideways by itself when a model's heads do not fit (12 x 12 on a phone).
      h('div', { class: 'head-grids' }, KINDS.map(([k, name]) => h('div', { class: 'table-scroll' }, h('table', { class: 'inspect-grid heads', dataset: { kind: k } },
        h('caption', { class: 'small muted' }, name),
        h('thead', {}, h('tr', {}, h('th', {}, 'L \\ H'), scores[k][0].map((_, hd) => h('th', {}, hd)))),
        h('tbody', {}, scores[k].map((row, l) => h('tr', {}, h('th', {}, l), row.map((s, hd) => h('td', {},
          h('button', {
            type: 'button', class: 'head-cell', style: shade(s), 'aria-pressed': String(chosen.has(`${l}.${hd}`)),
            title: `${headName(l, hd)}: ${name.toLowerCase()} score ${fmt(s, 3)}, mean attention entropy ${fmt(meanEntropy[l][hd])} nats. Click to ablate.`,
            dataset: { kind: k, layer: l, head: hd, score: s },
            on: { click: () => toggle(`${l}.${hd}`) },
          }, fmt(s)))))))))),
        h('div', { class: 'table-scroll' }, h('table', { class: 'inspect-grid heads', id: 'inspect-entropy' },
          h('caption', { class: 'small muted' }, 'Attention entropy (nats, mean over positions)'),
          h('thead', {}, h('tr', {}, h('th', {}, 'L \\ H'), meanEntropy[0].map((_, hd) => h('th', {}, hd)))),
          h('tbody', {}, meanEntropy.map((row, l) => h('tr', {}, h('th', {}, l), row.map((e, hd) => h('td', {
            class: 'entropy-cell', style: shade(e / Math.log(Math.max(t, 2))), role: 'button', tabindex: '-1',
            title: `${headName(l, hd)}: ${fmt(e, 3)} nats on average (0 = always one key; ln ${t} = ${fmt(Math.log(t))} = spread evenly over all ${t}). Click for each position.`,
            dataset: { layer: l, head: hd, mean: e },
            'aria-selected': String(entHead[0] === l && entHead[1] === hd),
            on: { click: () => showEntropy(l, hd), keydown: (ev) => {
              if (ev.key !== 'Enter' && ev.key !== ' ') return;
              ev.preventDefault();
              showEntropy(l, hd);
            } },
          }, fmt(e))))))))),
      entropyStrip(r),
      it ? h('p', { id: 'inspect-induction-result', class: 'small', dataset: { first: it.loss_first_half, second: it.loss_second_half, secondAblated: it.loss_second_half_ablated ?? '' } },
        `Loss on the first half ${fmt(it.loss_first_half)} nats, on the repeat ${fmt(it.loss_second_half)} nats`,
        it.loss_second_half_ablated != null ? `; with ${ab ? ab.heads.map((x) => headName(...x)).join(', ') : ''} ablated, the repeat costs ${fmt(it.loss_second_half_ablated)} nats.` : '.') : null,

      h('h3', {}, 'Ablation'),
      tryThis(`click heads in the grids above (they light up), choose zero or mean, and rerun: KL says how much the next-token guess moved.${card.experts ? ' Remove an expert (e.g. 0.1) to see how much one expert matters.' : ''}`),
      h('div', { class: 'inspect-controls' },
        h('label', {}, 'Mode ', h('select', { id: 'inspect-mode' },
          h('option', { value: 'zero', selected: mode !== 'mean' }, 'zero'), h('option', { value: 'mean', selected: mode === 'mean' }, 'mean over the sequence'))),
        card.experts ? h('label', {}, 'Remove experts ', h('input', {
          id: 'inspect-experts', size: 10, placeholder: 'L.E, L.E', value: ab?.experts?.map((x) => x.join('.')).join(', ') ?? '',
          on: { input: () => { root.querySelector('#inspect-ablate').disabled = !canAblate(); } },
        })) : null,
        h('button', { type: 'button', id: 'inspect-ablate', disabled: !chosen.size && !ab?.experts?.length && !cells.size && !xcells.size, on: { click: () => run({ induction: Boolean(it), ablate: true }) } }, 'Rerun with ablation'),
        h('button', { type: 'button', id: 'inspect-generate', disabled: !chosen.size && !ab?.experts?.length && !cells.size && !xcells.size, on: { click: generateAblated } }, 'Generate with ablation'),
        h('span', { class: 'small muted', id: 'inspect-chosen' }, chosen.size ? `Chosen: ${[...chosen].map(keyName).join(', ')}` : 'No head chosen.')),
      cellGrid(r, t),
      card.arch === 'encoder_decoder' ? crossGrid(r, t) : null,
      ab ? h('p', {
        id: 'inspect-ablation', class: 'small',
        dataset: { kl: ab.kl_last, top1Before: ab.top1_before, top1After: ab.top1_after },
      }, `${ab.heads.length ? `${ab.kind} ablation of ${ab.heads.map((x) => headName(...x)).join(', ')}` : ''}` +
        `${ab.experts.length ? `${ab.heads.length ? ' and ' : ''}experts ${ab.experts.map((x) => x.join('.')).join(', ')} removed` : ''}` +
        `${ab.mask_cells?.length ? `${ab.heads.length || ab.experts.length ? ' and ' : ''}attention cells ${ab.mask_cells.map(([q, k]) => `${q}\u2192${k}`).join(', ')} blocked` : ''}` +
        `${ab.cross_cells?.length ? `${ab.heads.length || ab.experts.length || ab.mask_cells?.length ? ' and ' : ''}cross-attention cells ${ab.cross_cells.map(([q, k]) => `${q}\u2192${k}`).join(', ')} blocked` : ''}: KL(before \u2016 after) = ${fmt(ab.kl_last, 4)} nats; top-1 ` +
        `${piece(ab.top1_before)} ${fmt(100 * ab.top1_prob_before, 1)}% \u2192 ${piece(ab.top1_after)} ${fmt(100 * ab.top1_prob_after, 1)}%.`) : null,
      h('p', { id: 'inspect-generated', class: 'small' }),

      h('h3', {}, 'Residual stream'),
      tryThis('compare the norm after the embedding with the last block: which layers write the most into the stream?'),
      h('p', { class: 'small muted grid-note' }, 'L2 norm of the residual at each position: after the embedding, then after each block.'),
      h('div', { class: 'table-scroll' }, h('table', { class: 'inspect-grid', id: 'inspect-norms' },
        h('thead', {}, h('tr', {}, h('th', {}, ''), positions.map((p) => h('th', { class: 'tok-head' }, piece(r.ids[p]))))),
        h('tbody', {}, r.residual_norms.map((row, l) => h('tr', {}, h('th', {}, l === 0 ? 'embed' : `after ${l - 1}`),
          positions.map((p) => h('td', { class: 'norm-cell', style: shade(row[p] / maxNorm), dataset: { layer: l, pos: p, norm: row[p] } }, fmt(row[p], 1)))))))),

      h('h3', {}, 'Surprise'),
      tryThis('hover the darkest token: what did the model expect instead?'),
      h('p', { class: 'surprise-text', id: 'inspect-surprise', dataset: { ids: r.ids.join(',') } }, r.ids.map((id, p) => {
        const alt = p > 0 ? last.top_ids[p - 1].map((a, k) => `${piece(a)} ${(100 * last.top_probs[p - 1][k]).toFixed(1)}%`).join(', ') : '';
        return h('span', {
          class: 'surprise-tok', style: shade(r.surprise[p] / maxSurprise),
          title: p === 0 ? 'the first token: nothing predicts it' : `${fmt(r.surprise[p])} nats; the model expected: ${alt}`,
          dataset: { pos: p, surprise: r.surprise[p] },
        }, piece(id));
      })));
    grids.reset();
  }

  /** One head's attention entropy at every query position (the core's [layer][head][position]). */
  function entropyStrip(r) {
    const [l, hd] = r.attention_entropy[entHead[0]]?.[entHead[1]] ? entHead : (entHead = [0, 0]);
    const row = r.attention_entropy[l][hd];
    return h('div', { class: 'table-scroll', id: 'inspect-entropy-strip', dataset: { layer: l, head: hd } },
      h('table', { class: 'inspect-grid' },
        h('caption', { class: 'small muted' }, `${headName(l, hd)}: attention entropy at each query position (nats; position p can see p + 1 keys)`),
        h('thead', {}, h('tr', {}, row.map((_, p) => h('th', { class: 'tok-head' }, piece(r.ids[p]))))),
        h('tbody', {}, h('tr', {}, row.map((e, p) => h('td', {
          class: 'entropy-pos', style: shade(e / Math.log(Math.max(r.ids.length, 2))),
          title: `${headName(l, hd)}, position ${p} (${piece(r.ids[p])}): ${fmt(e, 3)} nats`,
          dataset: { layer: l, head: hd, pos: p, entropy: e },
        }, fmt(e)))))));
  }

  function showEntropy(l, hd) {
    entHead = [l, hd];
    for (const c of root.querySelectorAll('td.entropy-cell')) {
      c.setAttribute('aria-selected', String(Number(c.dataset.layer) === l && Number(c.dataset.head) === hd));
    }
    root.querySelector('#inspect-entropy-strip').replaceWith(entropyStrip(report.report));
  }

  const canAblate = () => Boolean(chosen.size || cells.size || xcells.size || root.querySelector('#inspect-experts')?.value.trim());

  /** Decoder query x source key buttons of the encoder-decoder's cross-attention mask. */
  function crossGrid(r, t) {
    const src = input.ids;
    const note = 'Block cross-attention cells: click a (decoder query row, source key column) cell to block it in every layer and head, on top of the source padding mask. A row with every source key blocked reads nothing from the source.';
    if (t > 32 || src.length > 32) return h('p', { class: 'small muted' }, `${note} (Shown for up to 32 x 32 tokens; this pair is ${t} x ${src.length}.)`);
    return blockGrid(r, {
      blocked: () => xcells, id: 'inspect-xcells', cls: 'cross-cell', label: 'Block cross-attention cells', note,
      corner: 'q \\ src', keys: src, keyWord: 'source', shown: () => true,
    });
  }

  /** Query x key buttons of the decoder self-attention mask: a pressed cell is blocked on the next rerun. */
  function cellGrid(r, t) {
    const note = 'Block attention cells: click a (query row, key column) cell of the self-attention mask to block it in every layer and head, on top of the causal mask. A row with every key blocked attends nothing.';
    if (t > 32) return h('p', { class: 'small muted' }, `${note} (Shown for up to 32 tokens; this sequence has ${t}.)`);
    return blockGrid(r, {
      blocked: () => cells, id: 'inspect-cells', cls: 'mask-cell', label: 'Block attention cells', note,
      corner: 'q \\ k', keys: r.ids, keyWord: 'key', shown: (q, k) => k <= q,
    });
  }

  /**
   * A grid of buttons, one per (query row of r.ids, key column) cell, that block attention cells on the next rerun.
   * g: {blocked() (the set of blocked "Q.K" cells), id (the table's; its <details> is id-box), cls (the buttons'
   * class), label (the summary's words), note, corner, keys (the key columns' ids), keyWord ('key' | 'source'),
   * shown(q, k) (whether the cell has a button)}
   */
  function blockGrid(r, g) {
    const set = g.blocked();
    return h('details', { id: `${g.id}-box`, open: set.size > 0 },
      h('summary', { class: 'small' }, blockSummary(g)),
      h('p', { class: 'small muted grid-note' }, g.note),
      h('div', { class: 'table-scroll' }, h('table', { class: 'inspect-grid mask-cells', id: g.id },
        h('thead', {}, h('tr', {}, h('th', {}, g.corner), g.keys.map((id, k) => h('th', { class: 'tok-head', title: `${g.keyWord} ${k}: ${piece(id)}` }, k)))),
        h('tbody', {}, r.ids.map((id, q) => h('tr', {}, h('th', { title: `query ${q}: ${piece(id)}` }, q), g.keys.map((kid, k) => h('td', {},
          !g.shown(q, k) ? null : h('button', {
            type: 'button', class: g.cls, 'aria-pressed': String(set.has(`${q}.${k}`)),
            title: `query ${q} (${piece(id)}) \u2192 ${g.keyWord} ${k} (${piece(kid)}): click to ${set.has(`${q}.${k}`) ? 'allow' : 'block'}`,
            dataset: { q, k }, on: { click: () => toggleBlocked(g, `${q}.${k}`) },
          }, set.has(`${q}.${k}`) ? '\u00d7' : '')))))))));
  }

  function blockSummary(g) {
    const n = g.blocked().size;
    return `${g.label}${n ? ` (${n} blocked)` : ''}`;
  }

  function toggleBlocked(g, key) {
    const set = g.blocked();
    if (set.has(key)) set.delete(key);
    else set.add(key);
    const [q, k] = key.split('.');
    const b = root.querySelector(`button.${g.cls}[data-q="${q}"][data-k="${k}"]`);
    b.setAttribute('aria-pressed', String(set.has(key)));
    b.textContent = set.has(key) ? '\u00d7' : '';
    b.title = b.title.replace(/click to \w+$/, `click to ${set.has(key) ? 'allow' : 'block'}`);
    root.querySelector(`#${g.id}-box summary`).textContent = blockSummary(g);
    updateAblateButtons();
  }

  function updateAblateButtons() {
    root.querySelector('#inspect-ablate').disabled = !canAblate();
    root.querySelector('#inspect-generate').disabled = !canAblate();
  }

  function toggle(key) {
    if (chosen.has(key)) chosen.delete(key);
    else chosen.add(key);
    for (const b of root.querySelectorAll('button.head-cell')) {
      b.setAttribute('aria-pressed', String(chosen.has(`${b.dataset.layer}.${b.dataset.head}`)));
    }
    updateAblateButtons();
    root.querySelector('#inspect-chosen').textContent = chosen.size ? `Chosen: ${[...chosen].map(keyName).join(', ')}` : 'No head chosen.';
  }

  return {
    clear(message) {
      input = null;
      report = null;
      pending = null;
      status(message, 'empty');
    },
    /** A new prompt (from the page's analysis): inspect it. */
    setInput(next) {
      if (input?.card !== next.card) chosen = new Set();
      cells = new Set(); // positions of another sequence
      xcells = new Set();
      input = next;
      run();
    },
    /** The core's report for an inspect request: drawn when it is the newest. */
    showReport(request, next) {
      if (request !== pending) return;
      report = next;
      render(request.opts.mode);
    },
    showError(request, message) {
      if (request === pending) status(`Inspect failed: ${message}`, 'error');
    },
    /** The ablated generation's {ids, text}, written where its request was made. */
    showGenerated(request, result) {
      const g = generating.get(request);
      if (!g) return;
      g.out.dataset.ids = result.ids.join(',');
      g.out.replaceChildren(h('span', { class: 'small muted' }, `With ${g.what.join(', ')} off, greedy continues: `), h('code', {}, visible(result.text)));
    },
    showGenerateError(request, message) {
      const g = generating.get(request);
      if (g) g.out.textContent = `Generation failed: ${message}`;
    },
  };
}
