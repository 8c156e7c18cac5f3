// "Model": the shipped models (from www/models.json), "open your own" (file input, drag and drop anywhere on
// the page), a progress bar while a checkpoint downloads, and the model card from the core's load_model().
//
// State for tests:
//   #model-list button[data-model=ID]   aria-pressed="true" on the loaded one
//   #model-card   data-state "empty" | "loading" | "ready" | "error"; data-model (id or file name), data-arch
//                 table rows <tr data-field="parameters" data-value="…">
//   #model-error  the last load error (hidden when there is none); the previous model stays loaded
//   #model-progress  data-loaded / data-total of the last progress update (bytes)
import { h, replaceChildren, formatBytes, formatInt } from '../dom.js';

const ARCH_NAMES = {
  decoder: 'Decoder-only transformer (GPT-style)',
  llama: 'Llama-style decoder (RoPE, SwiGLU, RMSNorm)',
  encoder_decoder: 'Encoder-decoder transformer',
};

const FORMAT_NAMES = {
  tinyformer: 'tinyformer checkpoint',
  huggingface: 'Hugging Face model',
  llama2c: 'llama2.c model.bin',
};

export function createModelView({ list, fileInput, dropZone, progress, progressBar, progressText, errorEl, card, onPick, onFiles }) {
  let entries = [];
  let current = null;

  // Several files may be picked together: a Hugging Face model's config.json, model.safetensors (or its shards
  // and model.safetensors.index.json), tokenizer.json, ...; or llama2.c's model.bin + tokenizer.bin.
  fileInput.addEventListener('change', () => {
    const files = [...(fileInput.files ?? [])];
    if (files.length) onFiles(files);
    fileInput.value = ''; // the same files can be picked again
  });

  // Drag and drop anywhere on the page.
  let depth = 0;
  const hasFiles = (e) => [...(e.dataTransfer?.types ?? [])].includes('Files');
  document.addEventListener('dragenter', (e) => {
    if (!hasFiles(e)) return;
    depth++;
    document.body.classList.add('dragging');
  });
  document.addEventListener('dragleave', () => {
    depth = Math.max(0, depth - 1);
    if (depth === 0) document.body.classList.remove('dragging');
  });
  document.addEventListener('dragover', (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = 'copy';
  });
  // Drop anywhere on the page, or on the drop zone: files, or a model's folder (its files, one level deep).
  document.addEventListener('drop', (e) => {
    depth = 0;
    document.body.classList.remove('dragging');
    dropZone?.classList.remove('over');
    if (!e.dataTransfer?.files?.length) return;
    e.preventDefault();
    droppedFiles(e.dataTransfer).then((files) => { if (files.length) onFiles(files); });
  });
  dropZone?.addEventListener('dragover', () => dropZone.classList.add('over'));
  dropZone?.addEventListener('dragleave', () => dropZone.classList.remove('over'));

  /** The dropped files; a dropped folder gives its files (not its subfolders). */
  async function droppedFiles(dt) {
    const entries = [...(dt.items ?? [])].map((it) => it.webkitGetAsEntry?.()).filter(Boolean);
    if (!entries.some((en) => en.isDirectory)) return [...dt.files];
    const out = [];
    for (const en of entries) {
      if (en.isFile) out.push(await new Promise((res, rej) => en.file(res, rej)));
      else if (en.isDirectory) {
        const reader = en.createReader();
        for (;;) {
          const batch = await new Promise((res, rej) => reader.readEntries(res, rej));
          if (!batch.length) break;
          for (const child of batch) {
            if (child.isFile && !child.name.startsWith('.')) out.push(await new Promise((res, rej) => child.file(res, rej)));
          }
        }
      }
    }
    return out;
  }

  function renderList() {
    replaceChildren(list, entries.map((m) => h('button', {
      type: 'button',
      class: 'model-choice',
      'aria-pressed': String(m.id === current),
      dataset: { model: m.id },
      title: m.description ?? '',
      on: { click: () => onPick(m) },
    }, h('span', { class: 'model-choice-name' }, m.name ?? m.id))));
  }

  return {
    setManifest(models, error) {
      entries = models ?? [];
      if (error) {
        replaceChildren(list, h('p', { class: 'error' }, error));
        return;
      }
      renderList();
    },

    setCurrent(id) {
      current = id;
      for (const b of list.querySelectorAll('button[data-model]')) b.setAttribute('aria-pressed', String(b.dataset.model === id));
    },

    /** loaded/total in bytes; total may be 0 when the server sent no Content-Length. */
    showProgress(label, loaded, total) {
      progress.hidden = false;
      progress.dataset.loaded = String(loaded);
      progress.dataset.total = String(total);
      if (total > 0) {
        progressBar.max = total;
        progressBar.value = loaded;
        progressText.textContent = `${label}: ${formatBytes(loaded)} of ${formatBytes(total)} (${Math.floor((100 * loaded) / total)}%)`;
      } else {
        progressBar.removeAttribute('value'); // indeterminate
        progressText.textContent = `${label}: ${formatBytes(loaded)}`;
      }
    },

    showPreparing(label) {
      progress.hidden = false;
      progressBar.removeAttribute('value');
      progressText.textContent = `${label}: preparing the weights…`;
    },

    hideProgress() {
      progress.hidden = true;
    },

    showError(message) {
      errorEl.textContent = message;
      errorEl.hidden = false;
      if (card.dataset.state !== 'ready') {
        // No model to show: the card says what went wrong (the same text as the error line above it).
        card.dataset.state = 'error';
        replaceChildren(card, h('p', { class: 'muted' }, 'No model is loaded. Pick another one above, or open a checkpoint of your own.'));
      }
    },

    clearError() {
      errorEl.textContent = '';
      errorEl.hidden = true;
    },

    setLoading(label) {
      if (card.dataset.state !== 'ready') {
        card.dataset.state = 'loading';
        replaceChildren(card, h('p', { class: 'muted' }, `Loading ${label}…`));
      }
    },

    /** info: the core's model card; meta: {id, name, description, source} */
    showCard(info, meta) {
      card.dataset.state = 'ready';
      card.dataset.model = meta.id;
      card.dataset.arch = info.arch;
      card.dataset.backend = info.backend;
      const isEncDec = info.arch === 'encoder_decoder';
      const tok = info.tokenizer;
      const origin = info.origin ?? { format: 'tinyformer' };
      const nFiles = (origin.files?.length ?? 1) + (origin.tokenizer_file ? 1 : 0);
      const format = `${FORMAT_NAMES[origin.format] ?? origin.format}` +
        (origin.declared ? `: ${origin.declared}${origin.family ? ` (run as ${origin.family})` : ''}` : '');
      const rows = [
        ['format', 'Format', format],
        ['arch', 'Architecture', ARCH_NAMES[info.arch] ?? info.arch],
        ['parameters', 'Parameters', formatInt(info.parameters)],
        ['layers', 'Layers', isEncDec ? `${info.layers} encoder + ${info.layers} decoder` : info.layers],
        ['heads', 'Attention heads', info.heads],
        ['kv_heads', 'KV heads', info.kv_heads < info.heads
          ? `${info.kv_heads} (grouped-query: ${info.heads / info.kv_heads} query heads share each)` : info.kv_heads],
        ['head_dim', 'Head size', info.head_dim],
        ['d_model', 'Model width', info.d_model],
        ['d_ff', 'Feed-forward width', info.d_ff],
        ['experts', 'Experts', info.experts ? `${info.experts}, top-${info.top_k} per token` : 'none (dense)'],
        ['vocab_size', 'Vocabulary', isEncDec
          ? `${info.src_vocab_size ?? info.vocab_size} source / ${info.tgt_vocab_size ?? '?'} target` : formatInt(info.vocab_size)],
        ['context', 'Context length', `${formatInt(info.context)} tokens`],
        ['file_size', nFiles > 1 ? 'Files' : 'File size', nFiles > 1 ? `${formatBytes(info.file_size)} in ${nFiles} files`
          : formatBytes(info.file_size)],
        ['tokenizer', 'Tokenizer', tok ? `${tok.kind}, ${formatInt(tok.vocab_size)} entries${tok.merges ? `, ${formatInt(tok.merges)} merges` : ''}`
          : 'none in the file: type token ids'],
        ['backend', 'Runs on', info.backend === 'gpu' ? 'WebGPU (our WGSL kernels)' : 'CPU (our wasm SIMD kernels)'],
      ];
      // The GPU kernels the core chose for this adapter (src/gpu/policy.rs, KernelPolicy)
      const kernels = info.backend === 'gpu' ? info.gpu_kernels : null;
      if (kernels) {
        const few = { naive: 'one thread per output', gemv: 'GEMV', rows: 'one invocation per output, no barriers' };
        const many = { naive: 'one thread per output', tiled: 'tiled', tiled4: 'tiled, vec4', reg: 'register blocks, no barriers' };
        const attn = kernels.attention === 'rows' || kernels.norms === 'rows'
          ? `, an invocation per row for ${[kernels.attention === 'rows' && 'attention', kernels.norms === 'rows' && 'norms'].filter(Boolean).join(' and ')}` : '';
        rows.push(['gpu_kernels', 'GPU kernels', `${kernels.fused ? 'fused ops' : 'unfused ops'}; decoding: ` +
          `${few[kernels.few_rows] ?? kernels.few_rows}; prompt: ${many[kernels.many_rows] ?? kernels.many_rows}${attn}` +
          `${kernels.widen16 ? '; 16-bit weights widened to f32' : ''}`]);
      }
      const values = { format: origin.format, arch: info.arch, parameters: info.parameters, layers: info.layers, heads: info.heads,
        kv_heads: info.kv_heads, head_dim: info.head_dim, d_model: info.d_model, d_ff: info.d_ff,
        experts: info.experts ?? 0, vocab_size: info.vocab_size, context: info.context, file_size: info.file_size,
        tokenizer: tok?.kind ?? 'none', backend: info.backend,
        gpu_kernels: kernels ? `${kernels.fused ? 'fused' : 'unfused'},${kernels.few_rows},${kernels.many_rows}` : '' };
      replaceChildren(card,
        h('p', { class: 'model-title' }, h('strong', {}, meta.name ?? meta.id),
          meta.source ? h('span', { class: 'muted small' }, ` ${meta.source}`) : null),
        meta.description ? h('p', { class: 'muted small model-desc' }, meta.description) : null,
        h('table', { class: 'kv', id: 'model-table' },
          h('caption', { class: 'visually-hidden' }, 'Model card'),
          h('tbody', {}, rows.map(([key, label, value]) => h('tr', { dataset: { field: key, value: values[key] } },
            h('th', { scope: 'row' }, label), h('td', {}, String(value)))))));
    },
  };
}
