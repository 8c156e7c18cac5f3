// The page's protocol with its compute worker, declared once: every action www/worker.js answers, with its
// request, its result and its streaming events, and the facts the page needs about it (its watchdog limit, its
// name in messages, whether it waits in the worker's model queue, whether it runs the loaded model).
// www/core.js reads the limits, names and queueing; www/app.js reads `model`; www/worker.js checks at startup
// (protocolMismatch) that its handlers answer exactly these actions, queued exactly where `queued` says.
//
// Messages (structured clone):
//   page -> worker  {id, type, ...args}           type: an action below; args: its request
//   worker -> page  {id, ok: true, result}  or  {id, ok: false, error: string, fatal?: true}
//                   fatal: true means the wasm instance can no longer be trusted (a Rust panic surfaces as a
//                   WebAssembly.RuntimeError "unreachable"): the page then terminates the worker and starts a fresh one
//   worker -> page  {id, event}                   a streaming event of a running request (see `events` below)
//   worker -> page  {id, started: true}           a queued action begins (core.js starts its watchdog then)
//   worker -> page  {type: 'ready'}               once, when the worker script has started (before any wasm is loaded)
//   worker -> page  {type: 'fatal', error}        an error nobody caught (a panic inside an async core call): the
//                                                 page restarts the worker
//
// Per action:
//   limitMs   the watchdog's limit (core.js): past it the worker is stopped and restarted, and the call fails
//             naming the action. A queued action's clock starts at its {started}, not while it waits. Loading
//             parses and uploads a whole checkpoint and the self-test runs every kernel; a generation step (the
//             first one includes the prompt's prefill) and a forward pass must be quicker.
//   perEvent  the clock restarts at every event: the limit holds per generated token, per stretch of a load
//             from files without progress
//   name      what the page calls the action in its messages ("loading the model took longer than 3 s")
//   queued    waits in the worker's model queue and runs alone, in arrival order: the core answers "busy" to a
//             call that arrives while another holds the model (and the self-test shares the GPU device with
//             the model). The others are answered at once.
//   model     runs the loaded model: a crash during it is the model's (app.js's crash guard does not reload a
//             model blindly after it crashed the worker)
// Requests, results and events are given as `request -> result`; the wasm core's functions they call
// (src/wasm/) say more about each result.

export const ACTIONS = {
  // {} -> {version, isa ('simd128+relaxed-simd' | 'simd128': the build's CPU kernels), gpu: {ok, backend, adapter,
  // limits} or {ok: false, backend: 'none', error}, hasNavigatorGpu, browserAdapter: {vendor, architecture, device,
  // description} | null}. Loads the wasm, then looks for a WebGPU adapter; never fails for "no WebGPU".
  init: { limitMs: 120_000, name: 'starting the wasm core' },
  // {seq_len, num_pad, cached_len} -> the padding, look-ahead, combined and KV-cache masks, 1 = may attend, and
  // `cross`: a decoder of seq_len positions over this padded sequence as the source
  masks: { limitMs: 20_000, name: 'drawing the masks' },
  // {text, vocab_size, sentence} -> {merges, steps, vocab_size, report, explanation}. The worker refuses inputs
  // over the core's bounds (worker.js BPE_LIMITS) before copying them into wasm memory.
  bpe: { limitMs: 30_000, name: 'training the BPE workbench' },
  // {} -> {stopping: whether a generation was running}. Asks the running generation, or the one waiting in the
  // queue, to stop after the token it is computing now (the next 'generate' request clears the flag).
  stop: { limitMs: 20_000, name: 'stopping the generation' },
  // Test hook: {action} -> true. The next request of that action spins forever in Rust (the core's debug_hang)
  // instead of running, as a call too heavy for the device would; core.js's watchdog must then restart the worker.
  hangNext: { limitMs: 60_000, name: 'arming the watchdog test hook' },
  // Test hook: {} -> true. Destroys the GPU device, so that the next GPU call meets the device-lost path.
  loseDevice: { limitMs: 20_000, name: 'losing the GPU device (test hook)' },
  // Test hook: {mode} -> never answers. mode 'panic': a real Rust panic (the wasm traps with `unreachable`);
  // 'error': an uncaught exception in the worker (its error event fires).
  crash: { limitMs: 60_000, name: 'crashing the worker (test hook)' },

  // The training lab (www/views/train.js; src/wasm/lab.rs, src/train/lab.rs). One run at a time, beside the loaded
  // model. {spec {preset, layers?, heads?, dim?, context?, vocab?, batch?, lr?, steps?, seed?, eval_every?}, text?}
  // -> {settings, memory {weights, gradients, adam_moments, activations, total, largest}, params, cli}: the plan,
  // nothing allocated (the memory the run needs, shown before it starts)
  trainPlan: { limitMs: 20_000, name: 'planning the training run' },
  // {} -> {pausing: whether a run was stepping}. The running trainRun returns {state: 'paused'} after its chunk.
  trainPause: { limitMs: 20_000, name: 'pausing the training run' },
  // {} -> {stopping}. As trainPause, then the run is over (its model stays for trainModel until trainEnd)
  trainStop: { limitMs: 20_000, name: 'stopping the training run' },
  // {temperature} -> {temperature, running}: the temperature (0 = greedy, up to 2; anything else refused in one
  // line) of the lab's probe sample from the running trainRun's next probe on (and of later trainRun / trainProbe
  // calls that give none)
  trainSampleTemp: { limitMs: 20_000, name: 'setting the sample temperature' },

  // {} -> [{name, ok, max_abs_diff, tolerance, detail, ms}]: every GPU kernel against its CPU twin
  selftest: { limitMs: 300_000, name: 'the kernel self-test', queued: true },
  // {bytes (ArrayBuffer of a .safetensors file) | files (File objects given together: a Hugging Face directory's
  // files, llama2.c's model.bin + tokenizer.bin), preferGpu} -> the model's card (src/session/card.rs Card) with
  // gpu_kernels on WebGPU. Events from files: {kind: 'progress', read, total} (bytes). On an error the previous
  // model stays loaded.
  load: { limitMs: 180_000, name: 'loading the model', queued: true, model: true, perEvent: true },
  // {} -> the loaded model's card
  describe: { limitMs: 20_000, name: 'describing the model', queued: true, model: true },
  // {} -> the loaded GPU model's kernels and counters ({fused, few_rows, many_rows, attention, norms, dispatches,
  // submits, widen16}), null on the CPU path: tests check the choice made for the adapter, benchmarks report it
  gpuKernels: { limitMs: 60_000, name: 'reading the GPU kernels', queued: true },
  // {text} -> {kind, ids, pieces, spans?, unknown?} (src/session/prompt.rs Tokens)
  tokenize: { limitMs: 20_000, name: 'tokenizing the prompt', queued: true, model: true },
  // {text} -> the prompt box as the model's input (src/session/prompt.rs Prompt): {kind, ids, pieces, spans?, unknown?,
  // context, fits, room, keep_last}; ids typed by hand are parsed and checked against the vocabulary by the core
  prompt: { limitMs: 20_000, name: 'reading the prompt', queued: true, model: true },
  // {src, gen} -> what one analysis pass reads after the prompt `src` and the generated `gen`: {ids, tgt, offset,
  // start_len}
  window: { limitMs: 20_000, name: 'choosing the analysed tokens', queued: true, model: true },
  // {logits (one row), opts {temperature, top_k, top_p}, n} -> the n most likely next tokens with the sampler's
  // probabilities: [{id, p, piece}]
  candidates: { limitMs: 20_000, name: 'ranking the next-token candidates', queued: true, model: true },
  // {ids} -> the text of these output ids (special ids left out)
  decode: { limitMs: 20_000, name: 'decoding tokens', queued: true, model: true },
  // {ids} -> [a display string for each id]
  token_strings: { limitMs: 20_000, name: 'reading token strings', queued: true, model: true },
  // {ids, tgt?, opts {ablate, experts, mask_cells, cross_cells, mode, induction, seed}} -> the core's report for
  // the Inspect view: {report, pieces, induction_test?}
  inspect: { limitMs: 60_000, name: 'inspecting the model', queued: true, model: true },
  // {ids, opts (as inspect's, with max_new_tokens)} -> {ids, text}: greedy generation with the ablation on
  generate_ablated: { limitMs: 60_000, name: 'generating with the ablation', queued: true, model: true },
  // {ids (the prompt, or the encoder-decoder's source), tgt? (the decoder input), layers? (the attention maps to
  // send; default every layer)} -> {logits {rows, cols, data}, attention, masks, moe}
  forward: { limitMs: 90_000, name: 'the analysis pass over the prompt', queued: true, model: true },
  // {ids, opts (sampling and cache options, top, attention)} -> {stopped, steps, text (the characters completed at
  // the end), reason ('max_new_tokens' | 'context' | 'eos'; null when stopped), tokenMessages (how many 'tokens'
  // events carried the steps), tokensPerSubmit (the largest batch of tokens per GPU submission)}.
  // Events: {kind: 'start', ids (the prompt as the model keeps it)}, then {kind: 'tokens', steps: [{id, step,
  // text, piece, window_start, done, top?, attention?}]}: every token exactly once, in order, at most one such
  // event per ~16 ms frame (the first token at once), and the tokens still pending before the answer (at the
  // end, on Stop or on an error alike).
  generate: { limitMs: 90_000, name: 'one generation step', queued: true, model: true, perEvent: true },
  // {spec, text?, gpu} -> the plan (as trainPlan) with backend ('gpu' | 'cpu'): builds the run (ending the one
  // before), refused in one line when its memory is over the page's budget. Queued: WebGPU is the model's device too.
  trainStart: { limitMs: 120_000, name: 'starting the training run', queued: true },
  // {spec, text?, gpu, snapshot: ArrayBuffer} -> as trainStart, plus log (every logged step so far): the run
  // resumed from a snapshot of trainRun's (kept in IndexedDB), refused in one line when it is not this run's.
  trainResume: { limitMs: 120_000, name: 'resuming the saved training run', queued: true },
  // {every, inductionEvery, prompt?, temperature?} -> {state: 'done' | 'paused' | 'stopped', step}. Steps the run in chunks of
  // about 150 ms until it ends or trainPause / trainStop; between chunks the worker yields, so those are answered.
  // Events: {kind: 'steps', step, done, chunkSteps, chunkMs, logs: [{step, loss, val_loss?, lr, grad_norm,
  // tokens_per_second, elapsed_s}], induction?: {step, best?, head?, heads?, previous_token?, probe}} once per chunk
  // (steps 1, 100, the last, every `every`-th and each chunk's last are logged). Every `inductionEvery` steps, and
  // at step 0 and the end (skipped while the probes took over 4% of the steps' time), the model is probed (train::lab::probe: {induction, previous_token_heads,
  // induction_heads, maps, tokens, sample, expert_load, dates}); the last layer's induction scores are copied to
  // the top level (absent for the encoder-decoder). `prompt` starts a text model's sample, drawn at `temperature`
  // (as trainSampleTemp; the probe's sample_temperature) with the step as its seed. With `snapshotMs`, an
  // event {kind: 'snapshot', step, bytes: ArrayBuffer} (the run's state, for trainResume) at most every snapshotMs
  // and always when the call returns.
  trainRun: { limitMs: 60_000, name: 'one chunk of training steps', queued: true, perEvent: true },
  // {prompt?, temperature?} -> {best?, head?, heads?, previous_token?, probe}: trainRun's probe of the current model
  // now (while paused or done), its sample at `temperature` (as trainSampleTemp) seeded by the step
  trainProbe: { limitMs: 60_000, name: 'probing the trained model', queued: true },
  // {lr} -> the run's settings: the learning rate from the next step on (while paused)
  trainSetLr: { limitMs: 20_000, name: 'setting the learning rate', queued: true },
  // {} -> {bytes: ArrayBuffer}: the current model as a checkpoint (our .safetensors, as `tinyformer train --out`)
  trainModel: { limitMs: 60_000, name: 'saving the trained model', queued: true },
  // {} -> true: ends the run and frees its memory
  trainEnd: { limitMs: 20_000, name: 'ending the training run', queued: true },
  // The speed probe (www/speed.js): {ids, opts, tokens} -> {tokens, ms (from the second token to the last), tps,
  // firstMs}, timed in the worker next to the core. It measures a model during its load (loadOnFasterPath), so a
  // crash there is the load's business, not a loaded model's.
  probe: { limitMs: 60_000, name: 'measuring the generation speed', queued: true },
};

const UNKNOWN_LIMIT_MS = 60_000; // a request type the worker does not know (it answers at once with an error)

/** The watchdog limit of one action, in ms. */
export function limitFor(type) {
  return ACTIONS[type]?.limitMs ?? UNKNOWN_LIMIT_MS;
}

/** The action as the page's messages name it. */
export function describeAction(type) {
  return Object.hasOwn(ACTIONS, type) ? ACTIONS[type].name : `the "${type}" request`;
}

export const isQueued = (type) => ACTIONS[type]?.queued === true;
export const runsModel = (type) => ACTIONS[type]?.model === true;
export const limitPerEvent = (type) => ACTIONS[type]?.perEvent === true;

/**
 * What differs between ACTIONS and a worker's handlers (objects of action -> function): immediate ones answer
 * at once, queued ones wait in the model queue. [] when they agree.
 */
export function protocolMismatch(immediate, queued) {
  const problems = [];
  for (const type of Object.keys(ACTIONS)) {
    const inQueue = Object.hasOwn(queued, type);
    if (!inQueue && !Object.hasOwn(immediate, type)) problems.push(`'${type}' has no handler`);
    else if (inQueue !== isQueued(type)) problems.push(`'${type}' is ${inQueue ? '' : 'not '}queued by the worker`);
  }
  for (const type of [...Object.keys(immediate), ...Object.keys(queued)]) {
    if (!Object.hasOwn(ACTIONS, type)) problems.push(`'${type}' is not declared`);
  }
  return problems;
}
