// The prompt: what the user typed, read by the core as the model's input. The prompt box belongs to the Generate
// view; this module decides what it holds when a model loads (the model's suggestion, or what the user typed, or
// the prompt saved by "Reload the page" after a lost GPU) and asks the core to read it (`prompt`: tokenized, or
// ids typed by hand checked against the vocabulary, with how it fits the context).
import { state } from './state.js';

const PROMPT_KEY = 'tinyformer.prompt';
const IDS_PROMPT = '1 5 9 13'; // a prompt for a checkpoint without a tokenizer

export function createPrompt({ gen, call }) {
  return {
    text: () => gen.promptText(),

    /** The prompt as the core reads it: {kind, ids, pieces, spans?, unknown?, context, fits, room, keep_last}. Throws. */
    encode: () => call('prompt', { text: gen.promptText() }),

    /** Keeps the prompt across a page reload (the lost-GPU path). */
    saveForReload() {
      try { sessionStorage.setItem(PROMPT_KEY, gen.promptText()); } catch { /* storage off */ }
    },

    /** A new model was loaded: keep what the user typed, else show the model's own prompt. */
    chooseFor(card, meta, previous) {
      let saved = null;
      try {
        saved = sessionStorage.getItem(PROMPT_KEY);
        sessionStorage.removeItem(PROMPT_KEY);
      } catch { /* storage off */ }
      if (saved !== null) {
        gen.setPrompt(saved);
        state.promptTouched = true;
      }
      const text = gen.promptText();
      const untouched = !state.promptTouched || text.trim() === '';
      if (untouched || (previous && text === previous.meta.prompt)) {
        gen.setPrompt(meta.prompt ?? (card.tokenizer ? '' : IDS_PROMPT));
        state.promptTouched = false;
      }
      // A prompt that suits the model kind when the user never typed one.
      if (!card.tokenizer && !/^[\d\s,]*$/.test(gen.promptText()) && !state.promptTouched) gen.setPrompt(IDS_PROMPT);
    },
  };
}
