// The page's one state object: what is loaded, what ran, what is selected. The controller (app.js), the prompt
// handling (prompt.js) and the analysis wiring (analysis.js) read and write it; views never see it.

export const state = {
  core: null,           // {version, gpu, hasNavigatorGpu} from the worker's 'init'
  selftestRunning: false,
  manifest: [],
  model: null,          // {card, meta: {id, name, description, source}, source: {bytes: ArrayBuffer} | {files: File[]}}
  loading: false,
  loadingMeta: null,    // the model a 'load' call is loading now (named if the worker dies meanwhile)
  promptTouched: false, // the user typed in the prompt box: a model switch must not replace it
  lastPromptLen: 0,     // tokens in the prompt at the last analysis (the KV-cache note's cost)
  run: null,            // the last generation: {src, srcPieces, gen: [id], pieces, texts, tops, windows, stopped, reason}
  step: null,           // selected generation step
  analysis: null,       // the last forward() and its labels
  speed: {},            // model id -> the probe's {gpu, cpu, errors} (measured once per model and page)
};
