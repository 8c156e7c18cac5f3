// The prompt: what the user typed, read by the core as the model's input. The prompt box belongs to the Generate
// view; this module decides what it holds when a model loads (the model's suggestion, or what the user typed, or
// the prompt saved by "Reload the page" after a lost GPU) and asks the core to read it (`prompt`: tokenized, or
// ids typed by hand checked against the vocabulary, with how it fits the context).
import { state } from './state.js';

const PROMPT_KEY = 'tinyformer.prompt';
const IDS_PROMPT = '1 5 9 13'; // a prompt for a checkpoint without a tokenizer

export function createPrompt({ gen, call }) {
  /**
   * What the user typed is kept when another model loads, never dropped; when it was written for a model of
   * another task (Shakespeare's lines for the date model), the line under the prompt box says so and offers the new
   * model's own example, and "Put mine back" after that.
   */
  let writtenFor = null; // the model (meta) that was loaded when the prompt box was last typed in or filled

  function noteKept(meta, previous) {
    const text = gen.promptText();
    const author = writtenFor ?? previous?.meta;
    const kept = state.promptTouched && author && text.trim() !== '';
    if (!kept || author.id === meta.id || !meta.task || meta.task === author.task || !meta.prompt || text === meta.prompt) {
      gen.showPromptNote(null);
      return;
    }
    const mismatch = {
      kind: 'other-model',
      text: `This prompt was written for ${author.name}; ${meta.name} ${meta.task}.`,
      action: {
        id: 'prompt-use-example', label: 'Use its example',
        onClick: () => {
          gen.setPrompt(meta.prompt, { asTyped: true });
          writtenFor = meta;
          gen.showPromptNote({
            kind: 'replaced',
            text: `The prompt is now ${meta.name}\u2019s example.`,
            action: { id: 'prompt-put-back', label: 'Put mine back', onClick: () => {
              gen.setPrompt(text, { asTyped: true });
              writtenFor = author;
              gen.showPromptNote(mismatch);
            } },
          });
        },
      },
    };
    gen.showPromptNote(mismatch);
  }

  return {
    text: () => gen.promptText(),

    /** The prompt as the core reads it: {kind, ids, pieces, spans?, unknown?, context, fits, room, keep_last}. Throws. */
    encode: () => call('prompt', { text: gen.promptText() }),

    /** The user typed in the prompt box: it was written for the model loaded now. */
    typed() { writtenFor = state.model?.meta ?? null; },

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
        writtenFor = meta;
      }
      // A prompt that suits the model kind when the user never typed one.
      if (!card.tokenizer && !/^[\d\s,]*$/.test(gen.promptText()) && !state.promptTouched) gen.setPrompt(IDS_PROMPT);
      noteKept(meta, previous);
    },
  };
}
