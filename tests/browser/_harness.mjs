// Shared set-up for the browser tests: Debian's Chromium driven by playwright-core, the page served by
// scripts/serve.mjs on a free port, and collectors for requests and errors.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { startServer } from '../../scripts/serve.mjs';

export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

// Headless Chromium with WebGPU on SwiftShader (Vulkan on the CPU). Found by experiment with Debian's
// chromium 156 and playwright-core 1.65: these flags alone expose an adapter (vendor "google", architecture
// "swiftshader") in the page and in workers; --enable-features=Vulkan, --use-angle=swiftshader and
// --use-webgpu-adapter=swiftshader are NOT needed. Without --enable-unsafe-webgpu, navigator.gpu exists but
// requestAdapter() returns null. Playwright adds its own defaults on top (--remote-debugging-pipe, a fresh
// temporary --user-data-dir per launch, automation switches); it refuses to launch without them.
export const WEBGPU_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--enable-unsafe-webgpu',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
// The same browser without WebGPU: the "no adapter" path.
export const NO_WEBGPU_FLAGS = WEBGPU_FLAGS.filter((flag) => flag !== '--enable-unsafe-webgpu');

/**
 * Starts the static server (port 0 = a free port) and a browser. chromium.launch() gives each browser a
 * fresh temporary profile (user data dir) of its own and removes it on close.
 */
export async function setup({ webgpu = true } = {}) {
  // The page's files, plus the reference fixtures that some tests load with ?model=.
  const server = await startServer({ port: 0, extraPaths: ['tests/fixtures/models', 'tests/fixtures/train'] });
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: webgpu ? WEBGPU_FLAGS : NO_WEBGPU_FLAGS,
  });
  return {
    server,
    browser,
    url: server.url,
    async close() {
      await browser.close().catch(() => {});
      await server.close();
    },
  };
}

/**
 * Opens a page and records everything that would show a problem: requests to any origin other than the
 * test server, failed requests, uncaught errors and console errors (page and its workers).
 */
export async function openPage(env, path = '', { viewport = { width: 1280, height: 800 }, initScript } = {}) {
  const context = await env.browser.newContext({ viewport });
  const page = await context.newPage();
  const origin = new URL(env.url).origin;
  const log = { foreignRequests: [], pageErrors: [], consoleErrors: [], failedRequests: [] };
  const onConsole = (where) => (msg) => {
    if (msg.type() === 'error') log.consoleErrors.push(`${where}: ${msg.text()}`);
  };
  // Uncaught errors in workers also arrive as 'pageerror'.
  page.on('request', (req) => {
    const u = req.url();
    if (u.startsWith('data:') || u.startsWith('blob:')) return;
    if (new URL(u).origin !== origin) log.foreignRequests.push(u);
  });
  page.on('requestfailed', (req) => log.failedRequests.push(`${req.url()}: ${req.failure()?.errorText}`));
  page.on('response', (res) => {
    if (res.status() >= 400) log.failedRequests.push(`${res.url()}: HTTP ${res.status()}`);
  });
  page.on('pageerror', (err) => log.pageErrors.push(`page: ${err.message}`));
  page.on('console', onConsole('page')); // includes the workers' console messages
  if (initScript) await page.addInitScript(initScript);
  await page.goto(new URL(path, env.url).href);
  return { page, context, log };
}

/** Asserts nothing unexpected happened on the page. `allow` lists regexps for expected console errors. */
export function assertClean(assert, log, { allow = [] } = {}) {
  assert.deepEqual(log.foreignRequests, [], 'the page must only talk to its own origin');
  assert.deepEqual(log.pageErrors, [], 'no uncaught errors');
  const unexpected = log.consoleErrors.filter((text) => !allow.some((re) => re.test(text)));
  assert.deepEqual(unexpected, [], 'no console errors');
  assert.deepEqual(log.failedRequests, [], 'no failed requests');
}

/** Types the three mask inputs, submits, and waits until the grid shows exactly these values. */
export async function setMasks(page, { seqLen, numPad, cachedLen }) {
  await page.fill('#masks-seq-len', String(seqLen));
  await page.fill('#masks-num-pad', String(numPad));
  await page.fill('#masks-cached-len', String(cachedLen));
  await page.click('#masks-draw');
  await page.waitForSelector(
    `#masks-grid[data-state="ready"][data-seq-len="${seqLen}"][data-num-pad="${numPad}"][data-cached-len="${cachedLen}"]`,
    { timeout: 30_000 });
}

/** Reads a drawn matrix back from the DOM: {rows, cols, cells: number[][], rowLabels, colLabels}. */
export async function readMatrix(page, name) {
  return page.$eval(`[data-matrix="${name}"]`, (fig) => {
    const rows = Number(fig.dataset.rows);
    const cols = Number(fig.dataset.cols);
    const cells = Array.from({ length: rows }, () => Array(cols).fill(null));
    let count = 0;
    for (const td of fig.querySelectorAll('td.cell')) {
      cells[Number(td.dataset.row)][Number(td.dataset.col)] = Number(td.dataset.value);
      count++;
    }
    const rowLabels = [...fig.querySelectorAll('th.row-label')].map((th) => th.textContent);
    const colLabels = [...fig.querySelectorAll('th.col-label')].map((th) => th.textContent);
    return { rows, cols, cells, count, rowLabels, colLabels };
  });
}

/** The expected matrix for a rule (i, j) -> bool, as 1/0 numbers. */
export function expectedMatrix(rows, cols, allowed) {
  return Array.from({ length: rows }, (_, i) => Array.from({ length: cols }, (_, j) => (allowed(i, j) ? 1 : 0)));
}

// ---------------------------------------------------------------------------------------------------------
// Models, generation, views


export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const SHOT_DIR = path.join(REPO, 'test-output', 'screenshots');

/** The shipped models (www/models.json). A missing file is a test failure, never a skip. */
export function shippedModels() {
  return JSON.parse(fs.readFileSync(path.join(REPO, 'www/models.json'), 'utf8')).models;
}

export function assertModelFile(assert, file) {
  assert.ok(fs.existsSync(path.join(REPO, file)),
    `${file} is missing: the shipped models come from train/train.py; this test needs the real file`);
}

/**
 * The longest main-thread task a generation may cause in a test: a freeze a user would take for a hang. It is
 * not a speed check (the page aims at no task over 50 ms, and the tests print the tasks they saw): on a 2-core
 * machine a task's wall time also counts the time the main thread waits for a core that the worker's generation,
 * the browser and the test runner share, which made a 100 ms bound fail now and then.
 */
export const FREEZE_MS = 250;

/**
 * Records long tasks (main thread busy > 50 ms) from the start of the page: window.__longTasks; and the long
 * animation frames, with what they were made of: window.__longFrames.
 */
export function longTaskObserver() {
  window.__longTasks = [];
  window.__longFrames = [];
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) window.__longTasks.push({ start: e.startTime, duration: e.duration });
  }).observe({ type: 'longtask', buffered: true });
  // What a long task was made of (Long Animation Frames: the scripts that ran, and style/layout), for the
  // failure message of a check on long tasks.
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      window.__longFrames.push({
        start: Math.round(e.startTime), duration: Math.round(e.duration), blocking: Math.round(e.blockingDuration),
        render: Math.round(e.renderStart ? e.startTime + e.duration - e.renderStart : 0),
        styleLayout: Math.round(e.styleAndLayoutStart ? e.startTime + e.duration - e.styleAndLayoutStart : 0),
        scripts: e.scripts.map((x) => ({
          invoker: x.invoker, fn: x.sourceFunctionName, src: (x.sourceURL || '').split('/').pop(), duration: Math.round(x.duration),
          forcedLayout: Math.round(x.forcedStyleAndLayoutDuration),
        })),
      });
    }
  }).observe({ type: 'long-animation-frame', buffered: true });
}

/** Waits until the model card shows `id` (data-model), ready. */
export async function waitModel(page, id, timeout = 120_000) {
  await page.waitForSelector(`#model-card[data-state="ready"][data-model="${id}"]`, { timeout });
}

/** Sets the sampling controls and the prompt (fields left undefined keep their values). */
export async function setGenerate(page, { prompt, temperature, topK, topP, seed, max, kv } = {}) {
  if (prompt !== undefined) await page.fill('#prompt', prompt);
  if (temperature !== undefined) await page.fill('#gen-temperature', String(temperature));
  if (topK !== undefined) await page.fill('#gen-top-k', String(topK));
  if (topP !== undefined) await page.fill('#gen-top-p', String(topP));
  if (seed !== undefined) await page.fill('#gen-seed', String(seed));
  if (max !== undefined) await page.fill('#gen-max', String(max));
  if (kv !== undefined) await page.setChecked('#gen-kv', kv);
}

/**
 * Waits until the page's analysis of the prompt in the box is drawn and none is pending (body[data-analysis], set by
 * www/analysis.js), then two more frames: the page is idle, so a check on what a generation costs the main thread
 * measures the generation, not the end of the analysis of what was typed before it.
 */
export async function waitPromptAnalysed(page, timeout = 120_000) {
  await page.waitForFunction(() => document.body.dataset.analysis === 'idle'
    && document.querySelector('#attention-root')?.dataset.state === 'ready' && !document.getElementById('gen-start').disabled,
  null, { timeout });
  await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
}

/** Clicks Generate and waits for the end: {state, count, text, streamed, tps}. */
export async function generateAndWait(page, { timeout = 180_000 } = {}) {
  await page.waitForSelector('#gen-start:not([disabled])', { timeout: 60_000 });
  const run = Number(await page.getAttribute('#gen-output', 'data-run') ?? 0);
  await page.click('#gen-start');
  await page.waitForFunction((n) => {
    const out = document.getElementById('gen-output');
    return Number(out.dataset.run ?? 0) > n && ['done', 'stopped', 'error'].includes(out.dataset.state);
  }, run, { timeout });
  return readOutput(page);
}

export async function readOutput(page) {
  return page.evaluate(() => {
    const out = document.getElementById('gen-output');
    const toks = [...out.querySelectorAll('.tok')];
    return {
      state: out.dataset.state,
      count: Number(out.dataset.count),
      text: out.dataset.text,
      streamed: toks.filter((b) => !b.classList.contains('tok-partial')).map((b) => b.textContent).join(''),
      ids: toks.map((b) => Number(b.dataset.id)),
      tps: Number(document.getElementById('gen-stats').dataset.tps),
      ttft: Number(document.getElementById('gen-stats').dataset.ttftMs),
      error: document.getElementById('gen-error').hidden ? '' : document.getElementById('gen-error').textContent,
    };
  });
}

/** Clicks the JSON export of the attention view and returns the parsed file. */
export async function exportAttentionJson(page) {
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#attn-export-json')]);
  const file = await download.path();
  return { name: download.suggestedFilename(), json: JSON.parse(fs.readFileSync(file, 'utf8')) };
}

/** Screenshots of every view (element shots) and the whole page, under test-output/screenshots/. */
export async function screenshotViews(page, tag) {
  fs.mkdirSync(SHOT_DIR, { recursive: true });
  await page.screenshot({ path: path.join(SHOT_DIR, `${tag}-page.png`), fullPage: true });
  for (const v of ['model', 'generate', 'tokens', 'attention', 'next', 'experts', 'masks', 'bpe', 'device']) {
    const el = page.locator(`#view-${v}`);
    await el.scrollIntoViewIfNeeded();
    await el.screenshot({ path: path.join(SHOT_DIR, `${tag}-${v}.png`) });
  }
}

/**
 * Records in the page when the output shows "done" (window.__genEnd, from the task that showed it): the analysis
 * drawn after that is not generating, and reading the clock from here could land after it began. Returns now.
 */
export function markEnd(page) {
  return page.evaluate(() => {
    const o = document.getElementById('gen-output');
    window.__genEnd = null;
    window.__drawnCounts = []; // the token count at each draw of the output while it runs
    window.__skippedWhileRunning = null; // the cards the page lets the browser skip while tokens stream (style.css)
    new MutationObserver((_, obs) => {
      if (o.dataset.state === 'running' && Number(o.dataset.count) > 0) {
        window.__drawnCounts.push(Number(o.dataset.count));
        window.__skippedWhileRunning ??= [...document.querySelectorAll('main section.card')]
          .filter((c) => getComputedStyle(c).contentVisibility === 'auto').map((c) => c.id);
      }
      if (o.dataset.state !== 'done') return;
      window.__genEnd = performance.now();
      obs.disconnect();
    }).observe(o, { attributes: true, attributeFilter: ['data-state', 'data-count'] });
    return performance.now();
  });
}
