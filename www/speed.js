// Speed, measured rather than assumed: which compute path (WebGPU or the CPU path of the wasm core) runs the
// loaded model faster on this device, and what turning the KV cache off costs.
//
// The ranking differs by device: on a real GPU WebGPU wins; on a software adapter (SwiftShader) or a weak
// integrated GPU the CPU path can be several times faster. So when a model loads, the page loads it on each
// path the worker offers, times a few greedy tokens with the same options the Generate button uses, and keeps
// the faster one (app.js does the loading; this module measures and decides).

/** Tokens generated per path; the rate is timed from the second token to the last (the first pays the prefill). */
export const PROBE_TOKENS = 10;
/** The probe's prompt is cut to this many tokens: a short probe, the same for both paths. */
export const PROBE_PROMPT_TOKENS = 16;

/** The options of the probe: greedy, KV cache on, top-10 candidates read back each step as the page does. */
export function probeOptions() {
  return { temperature: 0, top_k: 0, top_p: 1, seed: 0, kv_cache: true, attention: false, top: 10 };
}

/**
 * Measures each path in turn. paths: e.g. ['gpu', 'cpu']; load(path) loads the model there and resolves its
 * card; probe() times PROBE_TOKENS tokens on what is loaded and resolves {tokens, ms, tps, firstMs}.
 * Resolves {gpu?: {tps, ms, tokens, firstMs, backend}, cpu?: {...}, errors: {path: message}}. A path that fails
 * to load or to run is reported in errors and left out of the choice.
 */
export async function measurePaths(paths, { load, probe }) {
  const results = { errors: {} };
  for (const path of paths) {
    try {
      const card = await load(path);
      const r = await probe(card);
      results[path] = { ...r, backend: card.backend };
    } catch (err) {
      results.errors[path] = err.message ?? String(err);
    }
  }
  return results;
}

/** The measured path with the higher tokens/s ('cpu' on a tie or when only the CPU was measured); null if none. */
export function fasterPath(results) {
  const gpu = results.gpu?.tps;
  const cpu = results.cpu?.tps;
  if (gpu == null && cpu == null) return null;
  if (gpu == null) return 'cpu';
  if (cpu == null) return 'gpu';
  return gpu > cpu ? 'gpu' : 'cpu';
}

/** A one-line, true summary of the measurement for the device view and the model card. */
export function speedSummary(results, chosen, choice) {
  const fmt = (r) => (r?.tps != null ? `${r.tps.toFixed(1)} tokens/s` : 'not measured');
  const names = { gpu: 'WebGPU', cpu: 'the CPU path' };
  const parts = [];
  if (results.gpu || results.errors?.gpu) parts.push(`WebGPU ${results.errors?.gpu ? `failed (${results.errors.gpu})` : fmt(results.gpu)}`);
  if (results.cpu || results.errors?.cpu) parts.push(`CPU ${results.errors?.cpu ? `failed (${results.errors.cpu})` : fmt(results.cpu)}`);
  const measured = parts.join(', ');
  if (choice === 'only') return `${measured}: running on ${names[chosen]}, the only path here (no usable WebGPU).`;
  if (choice === 'auto') {
    const other = chosen === 'gpu' ? 'cpu' : 'gpu';
    const ratio = results[chosen]?.tps && results[other]?.tps ? results[chosen].tps / results[other].tps : null;
    return `${measured}: running on ${names[chosen]}, ${ratio ? `${ratio.toFixed(1)}× as fast as ${names[other]} here` : 'the only path that ran'}.`;
  }
  return `${measured}: running on ${names[chosen]}, as you chose${fasterPath(results) && fasterPath(results) !== chosen ? ` (${names[fasterPath(results)]} was faster here)` : ''}.`;
}

/**
 * The work of a generation of `newTokens` tokens after a `promptLen`-token prompt, in token positions run
 * through the model: with the KV cache the prompt once, then one position per new token; without it every new
 * token re-runs the whole sequence so far.
 */
export function kvCost(promptLen, newTokens) {
  const p = Math.max(0, promptLen);
  const g = Math.max(0, newTokens);
  const cached = g > 0 ? p + g - 1 : 0;
  const uncached = g * p + (g * (g - 1)) / 2;
  return { cached, uncached, ratio: cached > 0 ? uncached / cached : 1 };
}

/**
 * The note shown with the KV cache off, for a model card and the current numbers: {text, cached, uncached}.
 * promptLen: the prompt's tokens (the encoder-decoder's decoder starts from one BOS); maxNew: Max new tokens;
 * sliding: whether generation may go past the context (else it stops there, which bounds the new tokens).
 */
export function kvNote(card, { promptLen, maxNew, sliding }) {
  const encDec = card.arch === 'encoder_decoder';
  const startLen = encDec ? 1 : promptLen;
  const room = Math.max(0, card.context - startLen);
  const g = sliding && !encDec ? maxNew : Math.min(maxNew, room);
  const c = kvCost(startLen, g);
  const text = 'KV cache off: each new token re-runs the whole sequence so far instead of only itself, so the work ' +
    `grows with the square of the length. Here (${startLen} ${encDec ? 'start' : 'prompt'} token${startLen === 1 ? '' : 's'}, ` +
    `${g} new) that is ${c.uncached.toLocaleString('en')} token positions through the model instead of ${c.cached.toLocaleString('en')} ` +
    `(${c.ratio.toFixed(1)}× the work).`;
  return { text, cached: c.cached, uncached: c.uncached };
}

/**
 * Loads the model (source: {bytes} of a checkpoint or {files} given together) where `choice` says: 'gpu', 'cpu', or 'auto' (the faster path); 'only' without WebGPU. Without
 * an earlier measurement (`measured`), it loads the model on each path the device has in turn and times a probe
 * there, then loads it on the faster one if that is not the one loaded last. call(type, args) reaches the worker.
 * Resolves {card (of the model as loaded), results (the measurement), chosen ('gpu' | 'cpu')}.
 */
export async function loadOnFasterPath({ call, source, meta, gpuOk, choice, measured, onMeasuring, onProgress }) {
  // A copy of the bytes goes to the worker; the caller's stay so that a restarted worker can load them again.
  // File objects are handles: the worker reads them itself, with progress events.
  const args = (path) => (source.files ? { files: source.files } : { bytes: source.bytes.slice(0) });
  const load = (path) => call('load', { ...args(path), preferGpu: path === 'gpu' }, {
    onEvent: (ev) => { if (ev.kind === 'progress') onProgress?.(path, ev.read, ev.total); },
  });
  let results = measured;
  let card;
  if (!results) {
    const paths = gpuOk ? ['gpu', 'cpu'] : ['cpu'];
    onMeasuring?.(`timing ${PROBE_TOKENS} tokens on ${gpuOk ? 'WebGPU and on the CPU path' : 'the CPU path'}`);
    results = await measurePaths(paths, {
      load: async (path) => (card = await load(path)),
      probe: async (c) => call('probe', { ids: await probeIds(call, c, meta), opts: probeOptions(), tokens: PROBE_TOKENS }),
    });
  }
  const chosen = choice === 'auto' || !gpuOk ? (fasterPath(results) ?? (gpuOk ? 'gpu' : 'cpu')) : choice;
  if (card?.backend !== chosen) card = await load(chosen);
  return { card, results, chosen };
}

/** A short prompt for the probe: the model's suggested prompt (or a few ids), at most PROBE_PROMPT_TOKENS. */
async function probeIds(call, card, meta) {
  let ids = [];
  if (card.tokenizer) {
    try {
      ids = (await call('tokenize', { text: meta.prompt || 'The ' })).ids;
    } catch { /* fall back to ids */ }
  }
  if (!ids.length) ids = [1, 5, 9, 13].filter((i) => i < (card.src_vocab_size ?? card.vocab_size));
  if (!ids.length) ids = [0];
  return ids.slice(0, PROBE_PROMPT_TOKENS);
}
