// "Generate": the prompt box, the sampling controls, Generate/Stop, live streaming of tokens, tokens/s and
// the time to the first token. The output is the decoded text exactly (newlines, runs of spaces, tabs: the
// box is white-space: pre-wrap); each generated token is an inline span with role="button" (Enter or Space
// selects its step in the other views), never an inline-block that would swallow newlines. The tokens are one Tab
// stop (the selected one, else the first): the arrow keys, Home and End move between them (dom.js roving()).
//
// The view owns its form: the prompt box, the sampling controls and the KV-cache note. The controller asks
// it for the prompt's text and the options, and never reaches into those elements itself.
//
// State for tests:
//   #gen-output  data-state "idle" | "running" | "done" | "stopped" | "error"; data-run (how many generations
//                started); data-count (tokens so far);
//                data-text (the decoded output, set when the generation ends);
//                data-reason (why it ended: "max_new_tokens" | "context" | "eos" | "stopped");
//                data-follow "true" | "false" (whether the box scrolls to the newest token: not after the reader
//                scrolled up in it, until they scroll back to the bottom)
//   #gen-output .tok[data-step=N][data-id=ID]  one per generated token (.tok-partial: an incomplete character)
//   #gen-end     the sentence that says why the generation ended (the context limit, the window)
//   #gen-stats   data-tps, data-ttft-ms (numbers, once known)
import { h, replaceChildren, roving } from '../dom.js';

const FIELDS = [
  // [input id, option name, label, parse]
  ['gen-temperature', 'temperature', 'Temperature', 'float'],
  ['gen-top-k', 'top_k', 'Top-k', 'int'],
  ['gen-top-p', 'top_p', 'Top-p', 'float'],
  ['gen-seed', 'seed', 'Seed', 'int'],
  ['gen-max', 'max_new_tokens', 'Max new tokens', 'int'],
];

// A model may suggest sampling settings (the date model: greedy, 12 tokens): these inputs take them.
const SAMPLING_INPUTS = { temperature: 'gen-temperature', top_k: 'gen-top-k', top_p: 'gen-top-p', seed: 'gen-seed', max_new_tokens: 'gen-max' };

export function createGenerateView({ form, prompt, promptLabel, promptNote, startBtn, stopBtn, stats, output, errorEl, kvBox,
  slideBox, kvNote, endEl, onStart, onStop, onSelectStep, onPromptInput, onSamplingInput, onKvInput }) {
  let running = false;
  let ready = false;
  let selected = null;
  let tokensEl = null;

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    if (!running && ready) onStart();
  });
  prompt.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      if (!running && ready) onStart();
    }
  });
  prompt.addEventListener('input', () => {
    onPromptInput();
    onKvInput();
  });
  for (const id of ['gen-temperature', 'gen-top-k', 'gen-top-p']) form.querySelector(`#${id}`).addEventListener('input', () => onSamplingInput());
  for (const el of [kvBox, form.querySelector('#gen-max')]) el.addEventListener('input', () => onKvInput());
  kvBox.addEventListener('change', () => onKvInput());
  let savedSampling = null; // what the controls held before a model suggested its own settings
  // The output box follows the newest token unless the reader scrolled up in it; scrolling back to the bottom
  // follows again. autoTop: where the box put itself last, so that its own scroll is not taken for the reader's.
  let follow = true;
  let autoTop = -1;
  const atBottom = () => output.scrollHeight - output.scrollTop - output.clientHeight <= 4;
  output.addEventListener('scroll', () => {
    if (atBottom()) follow = true;
    else if (Math.abs(output.scrollTop - autoTop) > 1) follow = false;
    output.dataset.follow = String(follow);
  }, { passive: true });
  function followNewest() {
    if (!follow) return;
    output.scrollTop = output.scrollHeight;
    autoTop = output.scrollTop;
  }
  stopBtn.addEventListener('click', () => onStop());
  output.addEventListener('click', (e) => {
    const b = e.target.closest('.tok');
    if (b) onSelectStep(Number(b.dataset.step));
  });
  roving(output, '.tok');
  output.addEventListener('keydown', (e) => {
    const b = e.target.closest?.('.tok');
    if (b && (e.key === 'Enter' || e.key === ' ')) {
      e.preventDefault();
      onSelectStep(Number(b.dataset.step));
    }
  });

  function updateButtons() {
    startBtn.disabled = running || !ready;
    stopBtn.disabled = !running;
  }

  function clearError() {
    errorEl.hidden = true;
    errorEl.textContent = '';
  }

  return {
    get running() { return running; },

    /** The prompt box's text. */
    promptText() { return prompt.value; },

    /** Sets the prompt box; asTyped: as if typed (the analysis and the KV note follow, as for the user's input). */
    setPrompt(text, { asTyped = false } = {}) {
      prompt.value = text;
      if (asTyped) prompt.dispatchEvent(new Event('input'));
    },

    /**
     * The line under the prompt box about the prompt ({text, action: {id, label, onClick}}), or null to hide it.
     * #prompt-note data-kind says which line it is (for tests).
     */
    showPromptNote(note) {
      promptNote.hidden = !note;
      if (!note) {
        promptNote.replaceChildren();
        delete promptNote.dataset.kind;
        return;
      }
      promptNote.dataset.kind = note.kind ?? '';
      promptNote.replaceChildren(note.text);
      if (note.action) {
        promptNote.append(' ', h('button', { type: 'button', class: 'secondary small-button', id: note.action.id,
          on: { click: note.action.onClick } }, note.action.label));
      }
    },

    /** Generation with a sliding window: checked by "Keep the last N tokens". */
    setSlidingWindow(on) { slideBox.checked = on; },

    /** What the KV-cache note needs: {kvCache, sliding, maxNew}. */
    cacheSettings() {
      return { kvCache: kvBox.checked, sliding: slideBox.checked, maxNew: Number(form.querySelector('#gen-max').value) || 0 };
    },

    /** The KV-cache note under the form: {text, cached, uncached} or null to hide it. */
    showKvNote(note) {
      kvNote.hidden = !note;
      if (!note) return;
      kvNote.dataset.cached = String(note.cached);
      kvNote.dataset.uncached = String(note.uncached);
      kvNote.textContent = note.text;
    },

    /** The loaded model's name, in the line under the heading (shown on narrow screens, where the card is below). */
    setModelName(name) {
      const line = form.parentElement.querySelector('#gen-model');
      line.querySelector('#gen-model-name').textContent = name;
      line.hidden = !name;
    },

    /** A model's suggested sampling settings; switching to a model that suggests none restores the controls. */
    applySampling(suggested, previousSuggested) {
      const input = (k) => form.querySelector(`#${SAMPLING_INPUTS[k]}`);
      if (suggested) {
        if (!previousSuggested) savedSampling = Object.fromEntries(Object.keys(SAMPLING_INPUTS).map((k) => [k, input(k).value]));
        for (const [k, v] of Object.entries(suggested)) if (SAMPLING_INPUTS[k]) input(k).value = String(v);
      } else if (previousSuggested && savedSampling) {
        for (const [k, v] of Object.entries(savedSampling)) input(k).value = v;
        savedSampling = null;
      }
    },

    setReady(isReady) {
      ready = isReady;
      updateButtons();
    },

    /** mode: 'text' | 'source' (encoder-decoder) | 'ids' (no tokenizer in the checkpoint) */
    setMode(mode) {
      promptLabel.textContent = mode === 'source' ? 'Source sentence (translated by the encoder-decoder)'
        : mode === 'ids' ? 'Prompt as token ids (this checkpoint has no tokenizer), e.g. 1 5 9'
          : 'Prompt';
    },

    /** Reads the sampling controls: {opts} or {error}. */
    readOptions() {
      const opts = {};
      for (const [id, name, label, kind] of FIELDS) {
        const el = form.querySelector(`#${id}`);
        const raw = el.value.trim();
        const n = Number(raw);
        const bad = raw === '' || !Number.isFinite(n) || (kind === 'int' && !Number.isInteger(n)) || n < 0;
        el.toggleAttribute('aria-invalid', bad);
        if (bad) return { error: `${label}: "${raw}" is not a ${kind === 'int' ? 'whole number' : 'number'} of 0 or more.` };
        opts[name] = n;
      }
      if (opts.max_new_tokens < 1) return { error: 'Max new tokens: at least 1.' };
      if (opts.top_p <= 0 || opts.top_p > 1) return { error: 'Top-p: a number above 0 and at most 1.' };
      opts.kv_cache = kvBox.checked;
      opts.sliding_window = slideBox.checked;
      return { opts };
    },

    sampling() {
      const { opts } = this.readOptions();
      return opts ?? null;
    },

    /** Clears the output and shows the prompt (for a decoder) before the first token arrives. */
    begin({ promptText, isSource }) {
      running = true;
      selected = null;
      clearError();
      updateButtons();
      output.dataset.state = 'running';
      output.dataset.run = String(Number(output.dataset.run ?? 0) + 1);
      output.dataset.count = '0';
      delete output.dataset.text;
      delete output.dataset.reason;
      tokensEl = h('span', { class: 'gen-tokens' });
      endEl.hidden = true;
      endEl.textContent = '';
      replaceChildren(output,
        isSource ? h('span', { class: 'gen-source' }, promptText, h('span', { class: 'arrow', 'aria-hidden': 'true' }, ' → '))
          : h('span', { class: 'gen-prompt' }, promptText),
        tokensEl,
        h('span', { class: 'caret', 'aria-hidden': 'true' }));
      follow = true;
      output.dataset.follow = 'true';
      output.scrollTop = 0;
      autoTop = 0;
      stats.textContent = 'Prefill…';
      delete stats.dataset.tps;
      delete stats.dataset.ttftMs;
    },

    /** step: {step, id, text, piece} from the core. */
    addToken(step) {
      // A token that ends inside a character (byte-level BPE) adds no text yet: the token that completes
      // the character shows it. The partial one stays clickable, marked by CSS (not part of the text).
      tokensEl.append(h('span', {
        role: 'button',
        tabindex: step.step === 0 ? '0' : '-1', // one Tab stop for all the tokens
        class: `tok${step.text === '' ? ' tok-partial' : ''}`,
        dataset: { step: step.step, id: step.id },
        title: `step ${step.step}: id ${step.id}, piece ${JSON.stringify(step.piece)}` +
          (step.text === '' ? ' (part of a character: the next token completes it)' : ''),
        'aria-label': `step ${step.step}: ${JSON.stringify(step.text !== '' ? step.text : step.piece)}`,
      }, step.text));
      output.dataset.count = String(step.step + 1);
    },

    /** After a batch of tokens is appended: the box shows the newest unless the reader scrolled up. */
    followNewest,

    setStats({ count, ttftMs, tps, backend, kvCache = true }) {
      const parts = [];
      if (ttftMs != null) {
        parts.push(`first token ${ttftMs < 1000 ? `${Math.round(ttftMs)} ms` : `${(ttftMs / 1000).toFixed(2)} s`}`);
        stats.dataset.ttftMs = String(Math.round(ttftMs));
      }
      if (tps != null) {
        parts.push(`${tps.toFixed(1)} tokens/s`);
        stats.dataset.tps = tps.toFixed(2);
      }
      parts.push(`${count} token${count === 1 ? '' : 's'}`);
      if (!kvCache) parts.push('no KV cache');
      if (backend) parts.push(backend === 'gpu' ? 'WebGPU' : 'CPU');
      stats.textContent = parts.join(' · ');
    },

    /** state: 'done' | 'stopped' | 'error'; reason: the core's stop reason; note: a sentence on why it ended */
    finish({ state, text, reason = null, note = '' }) {
      running = false;
      updateButtons();
      output.dataset.state = state;
      if (text != null) output.dataset.text = text;
      if (reason) output.dataset.reason = reason;
      output.querySelector('.caret')?.remove();
      endEl.hidden = !note && state !== 'stopped';
      endEl.textContent = state === 'stopped' ? `Stopped.${note ? ` ${note}` : ''}` : note;
      endEl.dataset.reason = reason ?? '';
    },

    /** action: {id, label, onClick} offers a way out next to the message (e.g. "Keep the last N tokens") */
    showError(message, action = null) {
      errorEl.replaceChildren(message);
      if (action) {
        errorEl.append(' ', h('button', { type: 'button', class: 'secondary', id: action.id, on: { click: () => {
          clearError();
          action.onClick();
        } } }, action.label));
      }
      errorEl.hidden = false;
    },

    clearError,

    select(step) {
      selected = step;
      const toks = [...output.querySelectorAll('.tok')];
      for (const b of toks) {
        const on = Number(b.dataset.step) === step;
        b.classList.toggle('selected', on);
        b.tabIndex = on ? 0 : -1;
        if (on) b.setAttribute('aria-current', 'step');
        else b.removeAttribute('aria-current');
      }
      if (toks.length && !toks.some((b) => b.tabIndex === 0)) toks[0].tabIndex = 0; // the tokens' one Tab stop
    },

    get selected() { return selected; },
  };
}
