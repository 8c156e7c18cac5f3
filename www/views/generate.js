// "Generate": the prompt box, the sampling controls, Generate/Stop, live streaming of tokens, tokens/s and
// the time to the first token. Each generated token is a button that selects its step in the other views.
//
// State for tests:
//   #gen-output  data-state "idle" | "running" | "done" | "stopped" | "error"; data-run (how many generations
//                started); data-count (tokens so far);
//                data-text (the decoded output, set when the generation ends)
//   #gen-output button.tok[data-step=N][data-id=ID]  one per generated token
//   #gen-stats   data-tps, data-ttft-ms (numbers, once known)
import { h, replaceChildren } from '../dom.js';

const FIELDS = [
  // [input id, option name, label, parse]
  ['gen-temperature', 'temperature', 'Temperature', 'float'],
  ['gen-top-k', 'top_k', 'Top-k', 'int'],
  ['gen-top-p', 'top_p', 'Top-p', 'float'],
  ['gen-seed', 'seed', 'Seed', 'int'],
  ['gen-max', 'max_new_tokens', 'Max new tokens', 'int'],
];

export function createGenerateView({ form, prompt, promptLabel, startBtn, stopBtn, stats, output, errorEl, kvBox,
  onStart, onStop, onSelectStep, onPromptInput }) {
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
  prompt.addEventListener('input', () => onPromptInput());
  stopBtn.addEventListener('click', () => onStop());
  output.addEventListener('click', (e) => {
    const b = e.target.closest('button.tok');
    if (b) onSelectStep(Number(b.dataset.step));
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
      tokensEl = h('span', { class: 'gen-tokens' });
      replaceChildren(output,
        isSource ? h('span', { class: 'gen-source' }, promptText, h('span', { class: 'arrow', 'aria-hidden': 'true' }, ' → '))
          : h('span', { class: 'gen-prompt' }, promptText),
        tokensEl,
        h('span', { class: 'caret', 'aria-hidden': 'true' }));
      stats.textContent = 'Prefill…';
      delete stats.dataset.tps;
      delete stats.dataset.ttftMs;
    },

    /** step: {step, id, text, piece} from the core. */
    addToken(step) {
      const visible = step.text !== '' ? step.text : step.piece;
      tokensEl.append(h('button', {
        type: 'button',
        class: `tok${step.text === '' ? ' tok-partial' : ''}`,
        dataset: { step: step.step, id: step.id },
        title: `step ${step.step}: id ${step.id}, piece ${JSON.stringify(step.piece)}`,
      }, visible));
      output.dataset.count = String(step.step + 1);
    },

    setStats({ count, ttftMs, tps, backend }) {
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
      if (backend) parts.push(backend === 'gpu' ? 'WebGPU' : 'CPU');
      stats.textContent = parts.join(' · ');
    },

    finish({ state, text }) {
      running = false;
      updateButtons();
      output.dataset.state = state;
      if (text != null) output.dataset.text = text;
      output.querySelector('.caret')?.remove();
      if (state === 'stopped') output.append(h('span', { class: 'gen-stopped muted small' }, ' (stopped)'));
    },

    showError(message) {
      errorEl.textContent = message;
      errorEl.hidden = false;
    },

    clearError,

    select(step) {
      selected = step;
      for (const b of output.querySelectorAll('button.tok')) {
        const on = Number(b.dataset.step) === step;
        b.classList.toggle('selected', on);
        if (on) b.setAttribute('aria-current', 'step');
        else b.removeAttribute('aria-current');
      }
    },

    get selected() { return selected; },
  };
}
