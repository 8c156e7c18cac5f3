// The analysis wiring: one forward() over the prompt (and what was generated after it), then every view that
// draws it (attention, masks, experts, next token, inspect), and the step the user selected. The core chooses
// what the pass reads (`window`: the encoder-decoder's decoder start, the newest tokens past the context) and
// ranks the next-token candidates (`candidates`); this module only asks and hands the answers to the views.
import { WorkerDiedError } from './core.js';
import { state } from './state.js';
import { visible, count } from './dom.js';

const MAX_MASK_TOKENS = 40; // the current input's masks are tables: draw at most this many tokens
const NO_EXPERTS = 'This model has no experts: every token goes through the same feed-forward network.';

// Each view in its own task, so that no single task holds the main thread for long.
const nextTask = () => new Promise((r) => setTimeout(r, 0));

/** views: {tokens, attention, nextView, experts, masks, inspectView, gen}; prompt: prompt.js; call: core.call */
export function createAnalysis({ views, prompt, call, onPromptLength }) {
  const { tokens, attention, nextView, experts, masks, inspectView, gen } = views;
  let timer = null;
  let seq = 0; // the newest analysis: an older one that lands late draws nothing
  // Where the analysis stands, for tests that must start from an idle page: 'pending' (the prompt changed and the
  // analysis waits for typing to pause), 'running' (asked or drawing), 'idle' (drawn, or none to come).
  const status = (v) => { document.body.dataset.analysis = v; };

  function schedule() {
    clearTimeout(timer);
    status('pending');
    timer = setTimeout(() => analyze(), 350);
  }

  /** An analysis in flight must not draw (a generation starts). */
  function cancel() {
    clearTimeout(timer);
    seq++;
    status('idle');
  }

  /** Tokenizes the prompt and runs forward() on it (no generation shown). */
  async function analyze() {
    clearTimeout(timer);
    if (!state.model || gen.running) {
      status('idle');
      return;
    }
    const mine = ++seq;
    status('running');
    try {
      await analyzeAs(mine);
    } finally {
      if (mine === seq) status('idle');
    }
  }

  async function analyzeAs(mine) {
    const card = state.model.card;
    let enc;
    try {
      enc = await prompt.encode();
    } catch (err) {
      if (mine === seq && !(err instanceof WorkerDiedError)) tokens.showError(err.message);
      return;
    }
    if (mine !== seq) return;
    tokens.show(enc, prompt.text(), { title: card.arch === 'encoder_decoder' ? 'Source' : 'Prompt' });
    if (!enc.ids.length) {
      clear('Type a prompt to see the model\u2019s attention, masks and next-token candidates.');
      return;
    }
    state.lastPromptLen = enc.ids.length;
    onPromptLength();
    if (!enc.fits) {
      clear(`The source has ${count(enc.ids.length, 'token')} but the model\u2019s context is ${enc.context}: shorten it.`);
      return;
    }
    state.run = null;
    state.step = null;
    await run({ src: enc.ids, srcPieces: enc.pieces, gen: [], genPieces: [], tops: [] }, mine);
  }

  function clear(message) {
    state.analysis = null;
    attention.clear(message);
    nextView.clear(message);
    experts.clear(state.model?.card.experts ? message : NO_EXPERTS);
    masks.clearInput(message);
    inspectView.clear(message);
  }

  /**
   * forward() over the prompt and what was generated after it, then every view.
   * s: {src: prompt/source ids, srcPieces, gen: generated ids, genPieces, tops: per-step candidates}
   */
  async function run(s, mine = ++seq) {
    status('running');
    try {
      await runAs(s, mine);
    } finally {
      if (mine === seq) status('idle');
    }
  }

  async function runAs(s, mine) {
    const card = state.model.card;
    const isEncDec = card.arch === 'encoder_decoder';
    let result;
    let labels;
    let win;
    let windowNote = '';
    try {
      win = await call('window', { src: s.src, gen: s.gen });
      if (isEncDec) {
        const [start] = await call('token_strings', { ids: win.tgt.slice(0, 1) });
        const tgtPieces = [start, ...s.genPieces].slice(0, win.tgt.length).map(visible);
        const srcPieces = s.srcPieces.map(visible);
        labels = {
          encoder: { rows: srcPieces, cols: srcPieces },
          decoder: { rows: tgtPieces, cols: tgtPieces },
          cross: { rows: tgtPieces, cols: srcPieces },
        };
      } else {
        // Past the context (a sliding window), the analysis covers the newest tokens that fit: what the model
        // read at the last step.
        const total = s.src.length + s.gen.length;
        const pieces = [...s.srcPieces, ...s.genPieces].slice(win.offset).map(visible);
        labels = { decoder: { rows: pieces, cols: pieces } };
        if (win.offset > 0) {
          windowNote = `The sequence has ${total} tokens but the model\u2019s context is ${card.context}: these maps cover ` +
            `tokens ${win.offset} to ${total - 1}, the newest that fit (what the model reads for the next token); the first ${win.offset} ` +
            `do not fit${s.gen.length ? ' and were forgotten by the sliding window' : ' (Generate refuses them unless the window slides)'}.`;
        }
      }
      result = await call('forward', { ids: win.ids, tgt: win.tgt ?? undefined });
    } catch (err) {
      if (mine === seq && !(err instanceof WorkerDiedError)) clear(`The forward pass failed: ${err.message}`);
      return;
    }
    if (mine !== seq) return;
    const offset = win.offset;
    // The query row whose output chose generated token s.
    state.analysis = {
      seq: s, result, labels, stepRow: (step) => win.start_len + step - 1 - offset, isEncDec, offset, windowNote,
      ids: win.ids, tgt: win.tgt ?? undefined,
    };
    await render();
  }

  async function render() {
    const a = state.analysis;
    if (!a) return;
    const card = state.model.card;
    attention.show({
      maps: a.result.attention, masks: a.result.masks, labels: a.labels,
      heads: card.heads, kvHeads: card.kv_heads, model: state.model.meta.id,
      steps: a.seq.genPieces.map(visible), stepRow: a.stepRow, note: a.windowNote,
    });
    if (state.step != null) attention.setStep(state.step);
    await nextTask();
    refreshExperts();
    await nextTask();
    refreshNextToken();
    await nextTask();
    masks.showInput({ masks: cropMasks(a.result.masks), labels: a.labels });
    inspectView.setInput({ ids: a.ids, tgt: a.tgt, card });
  }

  function refreshExperts() {
    const a = state.analysis;
    if (!a) return;
    if (!a.result.moe?.length) {
      experts.clear(NO_EXPERTS);
      return;
    }
    experts.show({ moe: a.result.moe, labels: a.labels.decoder.rows }, state.step != null ? a.stepRow(state.step) : null);
  }

  async function refreshNextToken() {
    const a = state.analysis;
    const r = state.run;
    if (state.step != null && r?.tops?.[state.step]) {
      const s = state.step;
      const w = r.windows?.[s] ?? 0;
      nextView.show(r.tops[s].map((c) => ({ ...c, piece: visible(c.piece) })), {
        title: `Step ${s}: the candidates the sampler saw (after temperature, top-k and top-p); it chose ${JSON.stringify(visible(r.pieces[s]))}.` +
          (w > 0 ? ` The model read tokens ${w} to ${r.src.length + s - 1} (the sliding window).` : ''),
        chosen: r.gen[s],
      });
      return;
    }
    if (!a) return;
    const opts = gen.sampling();
    if (!opts) return;
    const lg = a.result.logits;
    const row = lg.rows - 1;
    let cands;
    try {
      // slice: only this row crosses to the worker
      cands = await call('candidates', { logits: lg.data.slice(row * lg.cols, (row + 1) * lg.cols), opts, n: 10 });
    } catch {
      return;
    }
    if (state.analysis !== a || (state.step != null && state.run?.tops?.[state.step])) return;
    const last = a.labels.decoder.rows[row] ?? '';
    nextView.show(cands.map((c) => ({ ...c, piece: visible(c.piece) })), {
      title: `After ${JSON.stringify(last)} (position ${row + (a.offset ?? 0)}${a.offset ? `; the model reads tokens ${a.offset} to ${a.offset + row}` : ''}), with temperature ${opts.temperature}, top-k ${opts.top_k}, top-p ${opts.top_p}` +
        `${opts.temperature === 0 ? ' (temperature 0 = greedy: plain softmax, the top one is always chosen)' : ''}.`,
    });
  }

  function selectStep(s) {
    state.step = s;
    gen.select(s);
    attention.setStep(s);
    refreshNextToken();
    const a = state.analysis;
    if (a?.result.moe?.length) experts.setFocus(s != null ? a.stepRow(s) : null);
    document.body.dataset.step = s == null ? '' : String(s);
  }

  /** Attention, Next token and Experts wait for the analysis of a generation (stateName: 'generating' | 'analysing'). */
  function wait(message, stateName) {
    attention.wait(message, stateName);
    experts.wait(state.model?.card.experts ? message : null, stateName);
    // A selected step shows the candidates the sampler reported while streaming: those stay.
    if (!(state.step != null && state.run?.tops?.[state.step])) {
      nextView.wait(stateName === 'generating'
        ? 'Generating\u2026 click a generated token to see the candidates the sampler saw at that step.'
        : message, stateName);
    }
  }

  return { schedule, cancel, analyze, run, clear, refreshNextToken, selectStep, wait };
}

/** The masks of the current input as tables of at most MAX_MASK_TOKENS tokens a side. */
function cropMasks(ms) {
  const out = {};
  for (const [k, m] of Object.entries(ms ?? {})) {
    if (m.rows <= MAX_MASK_TOKENS && m.cols <= MAX_MASK_TOKENS) {
      out[k] = m;
      continue;
    }
    const rows = Math.min(m.rows, MAX_MASK_TOKENS);
    const cols = Math.min(m.cols, MAX_MASK_TOKENS);
    const data = new Float32Array(rows * cols);
    for (let i = 0; i < rows; i++) data.set(m.data.subarray(i * m.cols, i * m.cols + cols), i * cols);
    out[k] = { rows, cols, data, cropped: true };
  }
  return out;
}
