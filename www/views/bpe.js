// "BPE workbench": paste text, pick a vocabulary size, train the seed's BPE in the page (the core's
// bpe_workbench), then step through the learned merges in order and watch a sentence's tokens change.
//
// State for tests:
//   #bpe-root   data-state "idle" | "training" | "ready" | "error"; data-merges (how many were learned);
//               data-vocab (the vocabulary learned)
//   #bpe-vocab-note  why the vocabulary differs from the size asked (hidden when it does not)
//   #bpe-step   the range input (0..merges); #bpe-pieces li.piece one per token after that many merges
//   #bpe-merges li[data-n=N] the merges in order; the one applied last has aria-current="step"
import { h, replaceChildren, visible, count } from '../dom.js';

const SAMPLE = `Shall I compare thee to a summer's day?
Thou art more lovely and more temperate:
Rough winds do shake the darling buds of May,
And summer's lease hath all too short a date;
Sometime too hot the eye of heaven shines,
And often is his gold complexion dimm'd;
And every fair from fair sometime declines,
By chance or nature's changing course untrimm'd;
But thy eternal summer shall not fade,
Nor lose possession of that fair thou ow'st;
Nor shall Death brag thou wander'st in his shade,
When in eternal lines to time thou grow'st:
So long as men can breathe or eyes can see,
So long lives this, and this gives life to thee.`;

export function createBpeView(root, { request }) {
  const text = h('textarea', { id: 'bpe-text', rows: 7, spellcheck: 'false', maxlength: 1 << 20 }, SAMPLE);
  const vocab = h('input', { id: 'bpe-vocab', type: 'number', min: 1, max: 5000, step: 1, value: 120, inputmode: 'numeric' });
  const sentence = h('input', { id: 'bpe-sentence', type: 'text', value: 'The summer winds shall not fade', spellcheck: 'false', maxlength: 200 });
  const train = h('button', { type: 'submit', id: 'bpe-train' }, 'Train');
  const status = h('p', { class: 'small', id: 'bpe-status', 'aria-live': 'polite' });
  const explain = h('p', { class: 'small notice-inline', id: 'bpe-vocab-note', hidden: true });
  const result = h('div', { class: 'bpe-result' });
  const form = h('form', { class: 'bpe-form', novalidate: true },
    h('label', { class: 'field-label', for: 'bpe-text' }, 'Training text'), text,
    h('div', { class: 'bpe-row' },
      h('label', {}, 'Vocabulary size ', vocab),
      h('label', { class: 'grow' }, 'Sentence ', sentence),
      train),
    status, explain);
  replaceChildren(root, form, result);
  root.dataset.state = 'idle';

  let data = null;
  let seq = 0;

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const mine = ++seq;
    const size = Number(vocab.value);
    if (!Number.isInteger(size) || size < 1) {
      status.textContent = 'Vocabulary size: a whole number from 1 to 5000.';
      status.className = 'small error';
      return;
    }
    root.dataset.state = 'training';
    status.className = 'small muted';
    status.textContent = 'Training…';
    train.disabled = true;
    const t0 = performance.now();
    try {
      const r = await request({ text: text.value, vocab_size: size, sentence: sentence.value });
      if (mine !== seq) return;
      data = r;
      root.dataset.state = 'ready';
      root.dataset.merges = String(r.merges.length);
      status.className = 'small';
      status.textContent = `Learned ${r.merges.length} merges (vocabulary ${r.vocab_size}) in ${Math.round(performance.now() - t0)} ms. ` +
        'Step through them below.';
      // Why the vocabulary is not the size asked (the core's report): <UNK>, out of pairs, too small.
      explain.textContent = r.explanation ?? '';
      explain.hidden = !r.explanation;
      root.dataset.vocab = String(r.vocab_size);
      drawResult(0); // start from single characters; the user steps forward
    } catch (err) {
      if (mine !== seq) return;
      root.dataset.state = 'error';
      explain.hidden = true;
      status.className = 'small error';
      status.textContent = err.message;
    } finally {
      train.disabled = false;
    }
  });

  function drawResult(n) {
    const max = data.merges.length;
    const range = h('input', { type: 'range', id: 'bpe-step', min: 0, max, step: 1, value: n, 'aria-label': 'Merges applied' });
    const prev = h('button', { type: 'button', class: 'secondary', id: 'bpe-prev' }, '← Previous merge');
    const next = h('button', { type: 'button', class: 'secondary', id: 'bpe-next' }, 'Next merge →');
    const label = h('p', { class: 'small', id: 'bpe-step-label', 'aria-live': 'polite' });
    const pieces = h('ol', { class: 'chips', id: 'bpe-pieces', 'aria-label': 'Sentence tokens' });
    const mergesList = h('ol', { class: 'bpe-merges', id: 'bpe-merges', start: 1 },
      data.merges.map(([a, b], i) => h('li', { dataset: { n: i + 1 } },
        h('button', { type: 'button', class: 'merge', on: { click: () => set(i + 1) } },
          h('code', {}, visible(a)), ' + ', h('code', {}, visible(b)), ' → ', h('code', {}, visible(a + b))))));
    function set(k) {
      k = Math.max(0, Math.min(max, k));
      range.value = String(k);
      prev.disabled = k === 0;
      next.disabled = k === max;
      const ps = data.steps[k];
      replaceChildren(pieces, ps.map((p, i) => h('li', { class: 'chip piece', dataset: { index: i } },
        h('span', { class: 'chip-piece' }, visible(p)))));
      const m = data.merges[k - 1];
      label.textContent = k === 0
        ? `No merges: ${count(ps.length, 'token')} (single characters).`
        : `After ${k} merge${k === 1 ? '' : 's'} (last: ${visible(m[0])} + ${visible(m[1])}): ${count(ps.length, 'token')}.`;
      for (const li of mergesList.children) {
        const on = Number(li.dataset.n) === k;
        li.classList.toggle('current', on);
        li.classList.toggle('applied', Number(li.dataset.n) <= k);
        if (on) li.setAttribute('aria-current', 'step');
        else li.removeAttribute('aria-current');
      }
      root.dataset.step = String(k);
    }
    range.addEventListener('input', () => set(Number(range.value)));
    prev.addEventListener('click', () => set(Number(range.value) - 1));
    next.addEventListener('click', () => set(Number(range.value) + 1));
    replaceChildren(result,
      h('div', { class: 'bpe-stepper' }, prev, range, next),
      label, pieces,
      h('details', { class: 'bpe-merges-box' }, h('summary', {}, `All ${max} merges, in the order they were learned`), mergesList));
    set(n);
  }
}
