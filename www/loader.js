// Fetching what the page loads: the list of shipped models (www/models.json) and checkpoints, with progress
// (fetch + a ReadableStream reader against Content-Length) for the model view's progress bar.

/** The "models" list of a manifest: [{id, name, file, description, prompt, default?, sampling?}]. Throws on errors. */
export async function fetchManifest(url) {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`HTTP ${res.status}`);
  const json = await res.json();
  if (!Array.isArray(json.models)) throw new Error('it has no "models" list');
  return json.models;
}

/**
 * A checkpoint's bytes as an ArrayBuffer. path is relative to the page. onProgress(loaded, total) is called as
 * chunks arrive (total = 0 when the server sent no Content-Length). Throws with a message a person can act on.
 */
export async function fetchCheckpoint(path, onProgress) {
  const res = await fetch(new URL(path, document.baseURI));
  if (!res.ok) {
    throw new Error(res.status === 404
      ? `${path} is not on this server (HTTP 404). The shipped models are made by train/train.py; ` +
        'until they are there, open a checkpoint of your own.'
      : `the server answered HTTP ${res.status} for ${path}`);
  }
  return readWithProgress(res, onProgress);
}

async function readWithProgress(res, onProgress) {
  const total = Number(res.headers.get('Content-Length')) || 0;
  if (!res.body?.getReader) {
    const buf = await res.arrayBuffer();
    onProgress(buf.byteLength, total);
    return buf;
  }
  const reader = res.body.getReader();
  const chunks = [];
  let loaded = 0;
  onProgress(0, total);
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    loaded += value.byteLength;
    onProgress(loaded, total);
  }
  const out = new Uint8Array(loaded);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.byteLength;
  }
  return out.buffer;
}
