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

/**
 * A roving tabindex: the items of a group (elements matching `selector` inside `container`; a group is all of them,
 * or those inside one `scope` element, e.g. one table) make one Tab stop, and the arrow keys move inside it:
 * Left/Right one item, Up/Down one row (the same column of the next table row that has an item there, or `cols()`
 * items in a flat grid, else one item), Home/End the first and last. Enter and Space act as on any button (a span
 * with role="button" handles them itself). Items can come and go: the one focused last is the group's stop, and
 * reset() after a redraw makes the current item of each group (aria-pressed/-selected/-current) or its first the
 * stop. Returns {reset}.
 */
export function roving(container, selector, { scope = null, cols = null } = {}) {
  const groupOf = (item) => (scope ? item.closest(scope) : container);
  const itemsIn = (group) => [...group.querySelectorAll(selector)];
  const isCurrent = (el) => el.matches('[aria-pressed="true"], [aria-selected="true"], [aria-current]');
  function makeStop(item) {
    for (const el of groupOf(item).querySelectorAll(`${selector}[tabindex="0"]`)) if (el !== item) el.tabIndex = -1;
    item.tabIndex = 0;
  }
  function vertical(list, i, dir) {
    const n = cols?.();
    if (n) return list[i + dir * n] ?? null;
    const cell = list[i].closest('td, th');
    if (!cell) return list[i + dir] ?? null;
    for (let row = dir > 0 ? cell.parentElement.nextElementSibling : cell.parentElement.previousElementSibling; row;
      row = dir > 0 ? row.nextElementSibling : row.previousElementSibling) {
      const c = row.children[cell.cellIndex];
      const item = c?.matches(selector) ? c : c?.querySelector(selector);
      if (item) return item;
    }
    return null;
  }
  const own = (e) => {
    const item = e.target.closest?.(selector);
    return item && container.contains(item) ? item : null;
  };
  container.addEventListener('keydown', (e) => {
    const item = own(e);
    if (!item || e.altKey || e.ctrlKey || e.metaKey) return;
    const list = itemsIn(groupOf(item));
    const i = list.indexOf(item);
    const moves = {
      ArrowRight: () => list[i + 1], ArrowLeft: () => list[i - 1], ArrowDown: () => vertical(list, i, 1),
      ArrowUp: () => vertical(list, i, -1), Home: () => list[0], End: () => list[list.length - 1],
    };
    if (!moves[e.key]) return;
    e.preventDefault();
    const next = moves[e.key]();
    if (next) {
      makeStop(next);
      next.focus();
    }
  });
  container.addEventListener('focusin', (e) => {
    const item = own(e);
    if (item) makeStop(item);
  });
  return {
    reset() {
      const groups = scope ? [...container.querySelectorAll(scope)].filter((g) => g.querySelector(selector)) : [container];
      for (const g of groups) {
        const list = itemsIn(g);
        const stop = list.find(isCurrent) ?? list[0];
        for (const el of list) el.tabIndex = el === stop ? 0 : -1;
      }
    },
  };
}
