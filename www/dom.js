// Tiny DOM helpers shared by the views. No framework: views build elements with h() and replace their
// container's children when their state changes.

/**
 * h('td', {class: 'v1', dataset: {row: 0}}, '1') -> <td class="v1" data-row="0">1</td>
 * attrs: class, dataset (object), style (string or object, set through the CSSOM), on (object of event
 * listeners), hidden/disabled (booleans),
 * anything else is set with setAttribute. Children: nodes, strings, numbers, arrays; null/false are skipped.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value == null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'style') {
      // Through the CSSOM: the page's CSP (style-src 'self') blocks style attributes set as markup.
      if (typeof value === 'string') el.style.cssText = value;
      else for (const [k, v] of Object.entries(value)) el.style.setProperty(k, String(v));
    } else if (key === 'dataset') {
      for (const [k, v] of Object.entries(value)) if (v != null) el.dataset[k] = String(v);
    } else if (key === 'on') {
      for (const [type, fn] of Object.entries(value)) el.addEventListener(type, fn);
    } else if (value === true) el.setAttribute(key, '');
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child == null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

/** Replaces all children of `el`. */
export function replaceChildren(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

/** "1 token", "2 tokens": a count with its noun, singular for one. */
export function count(n, noun, plural = `${noun}s`) {
  return `${n} ${n === 1 ? noun : plural}`;
}

/** A message as the end of a sentence: a full stop added unless it already ends with one (or ? or !). */
export function sentence(text) {
  const t = String(text ?? '').trimEnd();
  return /[.?!…]$/.test(t) ? t : `${t}.`;
}

/** A token's text as the views draw it: spaces and newlines made visible (· and ⏎). */
export function visible(s) {
  return String(s ?? '').replace(/ /g, '·').replace(/\n/g, '⏎');
}

/** 1073741824 -> "1 GiB"; 16384 -> "16 KiB"; 300 -> "300 B". */
export function formatBytes(n) {
  if (typeof n !== 'number' || !Number.isFinite(n)) return String(n);
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  const s = Number.isInteger(v) ? String(v) : v.toFixed(1);
  return `${s} ${units[i]}`;
}

export function formatInt(n) {
  return typeof n === 'number' ? n.toLocaleString('en-US') : String(n);
}
