// Shared set-up for the browser tests: Debian's Chromium driven by playwright-core, the page served by
// scripts/serve.mjs on a free port, and collectors for requests and errors.
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
  const server = await startServer({ port: 0 });
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
