// Canvas drawing for attention matrices: small thumbnails and the large labelled heatmap.
// Weights are in [0, 1] (softmax rows). Colour: white -> deep blue on a square-root scale, so that small but
// real weights stay visible. Blocked cells (mask 0) are grey with a diagonal hatch, never white, so that
// "blocked" and "allowed but near zero" look different.

export const BLOCKED = [203, 208, 216];
export const HATCH = 'rgba(100, 110, 125, 0.55)';

/** weight in [0, 1] -> [r, g, b] */
export function weightColor(w) {
  const t = Math.sqrt(Math.min(1, Math.max(0, w)));
  // from #ffffff to #0b3aa8 through #6d9cf0
  const lo = [255, 255, 255];
  const mid = [109, 156, 240];
  const hi = [11, 58, 168];
  const [a, b, u] = t < 0.5 ? [lo, mid, t * 2] : [mid, hi, (t - 0.5) * 2];
  return [0, 1, 2].map((i) => Math.round(a[i] + (b[i] - a[i]) * u));
}

/**
 * Draws one head as a thumbnail: one pixel per cell, scaled up without smoothing.
 * m: {rows, cols, data (heads*rows*cols)}, head, mask: {rows, cols, data} | null, maxRow: last row to show or null
 */
export function drawThumbnail(canvas, m, head, mask, maxRow = null) {
  const { rows, cols } = m;
  const img = new ImageData(cols, rows);
  const base = head * rows * cols;
  for (let i = 0; i < rows; i++) {
    const dim = maxRow != null && i > maxRow;
    for (let j = 0; j < cols; j++) {
      const k = i * cols + j;
      const blocked = mask && mask.data[k] === 0;
      const c = blocked ? BLOCKED : weightColor(m.data[base + k]);
      const p = k * 4;
      img.data[p] = c[0];
      img.data[p + 1] = c[1];
      img.data[p + 2] = c[2];
      img.data[p + 3] = dim ? 60 : 255;
    }
  }
  const off = new OffscreenCanvas(cols, rows);
  off.getContext('2d').putImageData(img, 0, 0);
  const ctx = canvas.getContext('2d');
  ctx.imageSmoothingEnabled = false;
  ctx.fillStyle = '#ffffff';
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  // keep the aspect ratio: fit the matrix into the canvas
  const s = Math.min(canvas.width / cols, canvas.height / rows);
  const w = cols * s;
  const hgt = rows * s;
  ctx.drawImage(off, (canvas.width - w) / 2, (canvas.height - hgt) / 2, w, hgt);
}

const LABEL_SPACE = 84;
const LABEL_PX = 11; // the least spacing between two axis labels

/**
 * The layout of the large heatmap: a window of the matrix (view: rows r0..r1-1, columns c0..c1-1; default the
 * whole matrix) in cells of `cell` px. Axis labels are drawn for every `labelEvery`-th token (every one when the
 * cells are big enough), so that a long sequence keeps readable labels; the tooltip has every cell's detail.
 */
export function heatmapLayout(rows, cols, { maxWidth = 640, maxCell = 28, minCell = 2, view = null } = {}) {
  const v = view ?? { r0: 0, r1: rows, c0: 0, c1: cols };
  const vr = Math.max(1, v.r1 - v.r0);
  const vc = Math.max(1, v.c1 - v.c0);
  const cell = Math.max(minCell, Math.min(maxCell, Math.floor((maxWidth - LABEL_SPACE - 8) / vc)));
  const labelEvery = labelStep(cell);
  const left = LABEL_SPACE;
  const top = LABEL_SPACE;
  return { cell, left, top, showLabels: true, labelEvery, view: v, width: left + vc * cell + 8, height: top + vr * cell + 8 };
}

/** Label every k-th token so that labels are at least LABEL_PX apart: k from 1, 2, 5, 10, 20, 50, ... */
export function labelStep(cell) {
  for (const k of [1, 2, 5, 10, 20, 50, 100, 200, 500]) if (k * cell >= LABEL_PX) return k;
  return 1000;
}

/**
 * Draws the large heatmap (the window layout.view of the matrix) with token labels on both axes.
 * opts: {m, head, mask, rowLabels, colLabels, layout, maxRow (dim rows after it), focusRow, cursor: {i, j} | null}
 * (rows, columns, maxRow, focusRow and cursor are absolute indices of the matrix).
 * Sets on the canvas: data-view "r0,r1,c0,c1", data-label-every, data-row-labels / data-col-labels (the labelled
 * indices), data-focus-row (when the focus row is drawn).
 */
export function drawHeatmap(canvas, opts) {
  const { m, head, mask, rowLabels, colLabels, layout, maxRow = null, focusRow = null, cursor = null } = opts;
  const { cell, left, top, showLabels, width, height, labelEvery = 1 } = layout;
  const { r0, r1, c0, c1 } = layout.view ?? { r0: 0, r1: m.rows, c0: 0, c1: m.cols };
  const rows = r1 - r0; // the drawn window; i, j below are relative to it
  const cols = c1 - c0;
  const stride = m.cols;
  const dpr = Math.min(2, globalThis.devicePixelRatio || 1);
  canvas.width = Math.round(width * dpr);
  canvas.height = Math.round(height * dpr);
  canvas.style.width = `${width}px`;
  canvas.style.aspectRatio = `${width} / ${height}`;
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.fillStyle = '#ffffff';
  ctx.fillRect(0, 0, width, height);

  // Cells: one pixel per cell in an offscreen image, scaled up without smoothing (a fixed number of draw calls
  // whatever the size, so a long sequence does not hold the main thread).
  const base = head * m.rows * m.cols;
  const img = new ImageData(cols, rows);
  const blockedImg = mask ? new ImageData(cols, rows) : null;
  let anyBlocked = false;
  for (let i = 0; i < rows; i++) {
    const alpha = maxRow != null && r0 + i > maxRow ? 46 : 255;
    for (let j = 0; j < cols; j++) {
      const k = (r0 + i) * stride + c0 + j;
      const blocked = mask && mask.data[k] === 0;
      const c = blocked ? BLOCKED : weightColor(m.data[base + k]);
      const p = (i * cols + j) * 4;
      img.data[p] = c[0];
      img.data[p + 1] = c[1];
      img.data[p + 2] = c[2];
      img.data[p + 3] = alpha;
      if (blocked) {
        blockedImg.data[p + 3] = alpha;
        anyBlocked = true;
      }
    }
  }
  const off = new OffscreenCanvas(cols, rows);
  off.getContext('2d').putImageData(img, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(off, left, top, cols * cell, rows * cell);
  const hatch = anyBlocked ? hatchPattern(ctx, cell) : null;
  if (hatch) {
    // The hatch, only where a cell is blocked: the blocked cells as an alpha mask, then the pattern "source-in".
    const w = cols * cell;
    const hgt = rows * cell;
    const layer = new OffscreenCanvas(Math.ceil(w * dpr), Math.ceil(hgt * dpr));
    const g = layer.getContext('2d');
    g.imageSmoothingEnabled = false;
    const maskCanvas = new OffscreenCanvas(cols, rows);
    maskCanvas.getContext('2d').putImageData(blockedImg, 0, 0);
    g.drawImage(maskCanvas, 0, 0, layer.width, layer.height);
    g.globalCompositeOperation = 'source-in';
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.fillStyle = hatchPattern(g, cell);
    g.fillRect(0, 0, w, hgt);
    ctx.drawImage(layer, left, top, w, hgt);
  }
  // grid lines between cells when they are big enough to read
  if (cell >= 10) {
    ctx.strokeStyle = 'rgba(255,255,255,0.7)';
    ctx.lineWidth = 1;
    ctx.beginPath();
    for (let i = 0; i <= rows; i++) {
      ctx.moveTo(left, top + i * cell + 0.5);
      ctx.lineTo(left + cols * cell, top + i * cell + 0.5);
    }
    for (let j = 0; j <= cols; j++) {
      ctx.moveTo(left + j * cell + 0.5, top);
      ctx.lineTo(left + j * cell + 0.5, top + rows * cell);
    }
    ctx.stroke();
  }
  const fr = focusRow != null && focusRow >= r0 && focusRow < r1 ? focusRow - r0 : null;
  if (fr != null) {
    ctx.strokeStyle = '#f59e0b';
    ctx.lineWidth = 2;
    ctx.strokeRect(left - 1, top + fr * cell - 1, cols * cell + 2, cell + 2);
  }
  if (cursor && cursor.i >= r0 && cursor.i < r1 && cursor.j >= c0 && cursor.j < c1) {
    ctx.strokeStyle = '#111827';
    ctx.lineWidth = 2;
    ctx.strokeRect(left + (cursor.j - c0) * cell, top + (cursor.i - r0) * cell, cell, cell);
  }
  // Labels: every labelEvery-th token (by its position in the sequence), the focus row always; a label
  // with a step > 1 starts with the token's position so that the axis reads as a ruler.
  const labelledRows = [];
  const labelledCols = [];
  if (showLabels) {
    const font = Math.max(8, Math.min(12, cell * labelEvery - 1));
    ctx.font = `${font}px ui-monospace, Menlo, Consolas, monospace`;
    ctx.fillStyle = '#374151';
    ctx.textBaseline = 'middle';
    ctx.textAlign = 'right';
    const text = (labels, idx) => (labelEvery > 1 ? `${idx} ${clip(labels[idx] ?? '', 6)}` : clip(labels[idx] ?? `${idx}`));
    for (let i = 0; i < rows; i++) {
      const abs = r0 + i;
      if (abs % labelEvery !== 0 && i !== fr) continue;
      if (i !== fr && fr != null && Math.abs(i - fr) * cell < LABEL_PX) continue; // leave room for the focus label
      labelledRows.push(abs);
      ctx.fillStyle = i === fr ? '#b45309' : '#374151';
      ctx.fillText(text(rowLabels, abs), left - 4, top + i * cell + cell / 2);
    }
    ctx.fillStyle = '#374151';
    ctx.textAlign = 'left';
    for (let j = 0; j < cols; j++) {
      const abs = c0 + j;
      if (abs % labelEvery !== 0) continue;
      labelledCols.push(abs);
      ctx.save();
      ctx.translate(left + j * cell + cell / 2, top - 4);
      ctx.rotate(-Math.PI / 2);
      ctx.fillText(text(colLabels, abs), 0, 0);
      ctx.restore();
    }
    ctx.fillStyle = '#6b7280';
    ctx.font = '10px system-ui, sans-serif';
    ctx.textAlign = 'left';
    ctx.fillText('keys →', 4, 10);
    ctx.fillText('queries ↓', 4, 24);
  }
  // What was drawn, for tests and for the view's caption.
  canvas.dataset.view = `${r0},${r1},${c0},${c1}`;
  canvas.dataset.labelEvery = String(labelEvery);
  canvas.dataset.rowLabels = labelledRows.join(',');
  canvas.dataset.colLabels = labelledCols.join(',');
  canvas.dataset.focusRow = fr != null ? String(focusRow) : '';
}

function clip(s, n = 10) {
  const t = String(s);
  return t.length > n ? `${t.slice(0, n - 1)}…` : t;
}

function hatchPattern(ctx, cell) {
  if (cell < 5) return null;
  const size = 6;
  const c = new OffscreenCanvas(size, size);
  const g = c.getContext('2d');
  g.strokeStyle = HATCH;
  g.lineWidth = 1.2;
  g.beginPath();
  g.moveTo(0, size);
  g.lineTo(size, 0);
  g.moveTo(-1, 1);
  g.lineTo(1, -1);
  g.moveTo(size - 1, size + 1);
  g.lineTo(size + 1, size - 1);
  g.stroke();
  return ctx.createPattern(c, 'repeat');
}

/** Which cell (absolute row and column of the matrix) is under a point in CSS pixels of the canvas, or null. */
export function cellAt(layout, rows, cols, x, y) {
  const { r0, r1, c0, c1 } = layout.view ?? { r0: 0, r1: rows, c0: 0, c1: cols };
  const j = c0 + Math.floor((x - layout.left) / layout.cell);
  const i = r0 + Math.floor((y - layout.top) / layout.cell);
  if (i < r0 || j < c0 || i >= r1 || j >= c1) return null;
  return { i, j };
}
