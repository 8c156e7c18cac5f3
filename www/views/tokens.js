// "Tokens": the prompt as token chips, each with its id and its piece (space shown as ·, newline as ⏎, as the
// core's tokenize() gives them), and the characters outside the tokenizer's table flagged.
//
// State for tests:
//   #tokens-root  data-state "empty" | "ready" | "error"; data-count
//   .chip[data-index=i][data-id=ID]  class "unknown" when the chip covers a character outside the table: it shows
//                                    the character itself, flagged, and data-stand-in (the piece the model reads)
//   #tokens-unknown  the list of flagged characters (absent when there are none)
//   .chip.cut, #tokens-cut  the prompt tokens a generation left out because they did not fit the context
import { h, replaceChildren, visible } from '../dom.js';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function createTokensView(root) {
  return {
    clear(message = 'The prompt\u2019s tokens appear here.') {
      root.dataset.state = 'empty';
      replaceChildren(root, h('p', { class: 'muted' }, message));
    },

    showError(message) {
      root.dataset.state = 'error';
      replaceChildren(root, h('p', { class: 'error' }, message));
    },

    /**
     * tok: the core's tokenize() result {kind, ids, pieces, spans, unknown} for `text`; or, for a checkpoint
     * without a tokenizer, {kind: 'ids', ids, pieces} (pieces from token_strings).
     */
    show(tok, text, { title = 'Prompt', cut = 0 } = {}) {
      const unknownBytes = unknownByteOffsets(text, tok.unknown ?? []);
      const bytes = unknownBytes.length ? encoder.encode(text) : null;
      const chips = tok.ids.map((id, i) => {
        const span = tok.spans?.[i];
        const covers = span ? unknownBytes.filter(({ byte }) => byte >= span[0] && byte < span[1]) : [];
        const piece = tok.pieces[i] ?? `#${id}`;
        if (covers.length) {
          // A stand-in token: show the text it covers (the character itself), flagged, and what the model reads.
          const own = visible(decoder.decode(bytes.subarray(span[0], span[1])));
          return h('li', {
            class: `chip unknown${i < cut ? ' cut' : ''}`,
            dataset: { index: i, id, standIn: piece },
            title: `token ${i}: ${covers.map((c) => JSON.stringify(c.char)).join(', ')} is not in the tokenizer\u2019s table; ` +
              `the model reads id ${id} (${JSON.stringify(piece)}) instead`,
          }, h('span', { class: 'chip-piece' }, own), h('span', { class: 'chip-flag', 'aria-label': 'not in the table' }, '?'),
          h('span', { class: 'chip-id' }, `${id} = ${piece === '' ? '\u2205' : piece}`));
        }
        return h('li', {
          class: `chip${i < cut ? ' cut' : ''}`,
          dataset: { index: i, id },
          title: `token ${i}: id ${id}${i < cut ? ' (outside the context: the model did not read it)' : ''}`,
        }, h('span', { class: 'chip-piece' }, piece === '' ? '\u2205' : piece), h('span', { class: 'chip-id' }, String(id)));
      });
      root.dataset.state = 'ready';
      root.dataset.count = String(tok.ids.length);
      const chars = [...text].length;
      replaceChildren(root,
        h('p', { class: 'small muted' },
          `${title}: ${tok.ids.length} token${tok.ids.length === 1 ? '' : 's'}`,
          tok.kind !== 'ids' ? ` for ${chars} character${chars === 1 ? '' : 's'} (tokenizer: ${tok.kind})` : ' (typed ids)',
          '. · is a space, ⏎ a newline.'),
        h('ol', { class: 'chips', 'aria-label': `${title} tokens` }, chips),
        cut > 0 ? h('p', { class: 'small notice-inline', id: 'tokens-cut' },
          `The first ${cut} token${cut === 1 ? '' : 's'} (struck through) do not fit the model\u2019s context: the model never read them.`) : null,
        unknownBytes.length ? h('p', { class: 'unknown-note', id: 'tokens-unknown', role: 'note' },
          h('span', { class: 'badge badge-warn' }, 'Not in the table'), ' ',
          unknownBytes.map((u) => `${JSON.stringify(u.char)} at character ${u.index}`).join(', '),
          tok.kind === 'chars' ? ': left out or mapped to the unknown id.' : ': mapped to a stand-in token.') : null);
    },
  };
}

/** Char offsets (code points, as the core counts them) -> {index, char, byte} with the UTF-8 byte offset. */
function unknownByteOffsets(text, unknown) {
  if (!unknown.length) return [];
  const wanted = new Set(unknown);
  const out = [];
  let byte = 0;
  let index = 0;
  for (const ch of text) {
    if (wanted.has(index)) out.push({ index, char: ch, byte });
    byte += encoder.encode(ch).length;
    index++;
  }
  return out;
}
