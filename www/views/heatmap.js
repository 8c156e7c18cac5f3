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

/** The layout of the large heatmap for a matrix of rows x cols with the given label lists. */
export function heatmapLayout(rows, cols, { maxWidth = 640, maxCell = 28, minCell = 3 } = {}) {
  const labelSpace = 84;
  const cell = Math.max(minCell, Math.min(maxCell, Math.floor((maxWidth - labelSpace - 8) / Math.max(cols, 1))));
  const showLabels = cell >= 7;
  const left = showLabels ? labelSpace : 8;
  const top = showLabels ? labelSpace : 8;
  return { cell, left, top, showLabels, width: left + cols * cell + 8, height: top + rows * cell + 8 };
}

/**
 * Draws the large heatmap with token labels on both axes.
 * opts: {m, head, mask, rowLabels, colLabels, layout, maxRow (dim rows after it), focusRow, cursor: {i, j} | null, title}
 */
export function drawHeatmap(canvas, opts) {
  const { m, head, mask, rowLabels, colLabels, layout, maxRow = null, focusRow = null, cursor = null } = opts;
  const { rows, cols } = m;
  const { cell, left, top, showLabels, width, height } = layout;
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
  const base = head * rows * cols;
  const img = new ImageData(cols, rows);
  const blockedImg = mask ? new ImageData(cols, rows) : null;
  let anyBlocked = false;
  for (let i = 0; i < rows; i++) {
    const alpha = maxRow != null && i > maxRow ? 46 : 255;
    for (let j = 0; j < cols; j++) {
      const k = i * cols + j;
      const blocked = mask && mask.data[k] === 0;
      const c = blocked ? BLOCKED : weightColor(m.data[base + k]);
      const p = k * 4;
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
  if (focusRow != null && focusRow < rows) {
    ctx.strokeStyle = '#f59e0b';
    ctx.lineWidth = 2;
    ctx.strokeRect(left - 1, top + focusRow * cell - 1, cols * cell + 2, cell + 2);
  }
  if (cursor) {
    ctx.strokeStyle = '#111827';
    ctx.lineWidth = 2;
    ctx.strokeRect(left + cursor.j * cell, top + cursor.i * cell, cell, cell);
  }
  if (showLabels) {
    const font = Math.max(8, Math.min(12, cell - 1));
    ctx.font = `${font}px ui-monospace, Menlo, Consolas, monospace`;
    ctx.fillStyle = '#374151';
    ctx.textBaseline = 'middle';
    ctx.textAlign = 'right';
    for (let i = 0; i < rows; i++) {
      ctx.fillStyle = focusRow === i ? '#b45309' : '#374151';
      ctx.fillText(clip(rowLabels[i] ?? `${i}`), left - 4, top + i * cell + cell / 2);
    }
    ctx.fillStyle = '#374151';
    ctx.textAlign = 'left';
    for (let j = 0; j < cols; j++) {
      ctx.save();
      ctx.translate(left + j * cell + cell / 2, top - 4);
      ctx.rotate(-Math.PI / 2);
      ctx.fillText(clip(colLabels[j] ?? `${j}`), 0, 0);
      ctx.restore();
    }
    ctx.fillStyle = '#6b7280';
    ctx.font = '10px system-ui, sans-serif';
    ctx.textAlign = 'left';
    ctx.fillText('keys →', 4, 10);
    ctx.fillText('queries ↓', 4, 24);
  }
}

function clip(s) {
  const t = String(s);
  return t.length > 10 ? `${t.slice(0, 9)}…` : t;
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

/** Which cell is under a point in CSS pixels of the canvas, or null. */
export function cellAt(layout, rows, cols, x, y) {
  const j = Math.floor((x - layout.left) / layout.cell);
  const i = Math.floor((y - layout.top) / layout.cell);
  if (i < 0 || j < 0 || i >= rows || j >= cols) return null;
  return { i, j };
}
