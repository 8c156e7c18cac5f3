// What the page says about the model's context: why a generation ended (the context limit, the sliding window,
// a prompt cut to its tail). The window arithmetic itself is the core's (src/model/runtime/run.rs:
// sliding_window_start); the page reads its results from the generation's events (window_start per token, the
// kept prompt in the start event, the stop reason at the end).
import { count } from './dom.js';

/**
 * Why the generation ended, in one or more sentences ('' when it simply made the tokens asked for).
 * run: {src (the prompt ids the model kept), promptCut, gen, windows (window_start per step), reason}; ctx: the
 * model's context in tokens.
 */
export function endNote(run, ctx) {
  const parts = [];
  if (run.promptCut > 0) {
    parts.push(`The prompt was cut to its last ${count(run.src.length, 'token')} (the first ${run.promptCut} do not fit the model\u2019s context of ${ctx}).`);
  }
  const firstSlide = run.windows.findIndex((w) => w > 0);
  if (firstSlide >= 0) {
    const last = run.windows[run.windows.length - 1];
    parts.push(`From step ${firstSlide} on, the sequence was longer than the model\u2019s context of ${ctx} tokens: each token was ` +
      `predicted from the newest ${count(ctx - 1, 'token')} only (the sliding window; at the last step it forgot the first ${last}).`);
  }
  if (run.reason === 'context') {
    parts.push(`Stopped: the model\u2019s context is ${ctx} tokens (${run.src.length} in the prompt + ${run.gen.length} generated). ` +
      'Turn on \u201cSliding window\u201d to keep generating on the newest tokens.');
  }
  return parts.join(' ');
}
