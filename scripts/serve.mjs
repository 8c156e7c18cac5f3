#!/usr/bin/env node
// A dependency-free static file server for the tinyformer playground.
//
//   node scripts/serve.mjs [--port N] [--root DIR]     (PORT env works too; default 8080; 0 = any free port)
//
// Listens on 127.0.0.1 only and serves only the page's files: index.html, www/ (with the wasm package in
// www/pkg/) and models/; never target/, .git, src/ or anything else in the repository. Requests whose Host is
// not a loopback name are refused (DNS rebinding: a foreign site whose name resolves to 127.0.0.1 would
// otherwise read the page's files). Every response carries the security headers (SECURITY_HEADERS): the CSP
// with frame-ancestors (which a <meta> CSP cannot carry), nosniff, and COOP/COEP, which make the page
// cross-origin isolated (SharedArrayBuffer, hence wasm threads later). Used by scripts/serve.sh for people
// and imported by the browser tests (tests/browser/) through startServer({root, port}) -> {url, port, close}.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = path.resolve(HERE, '..');

export const MIME_TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.wasm': 'application/wasm',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
  '.ico': 'image/x-icon',
  '.txt': 'text/plain; charset=utf-8',
  '.md': 'text/plain; charset=utf-8',
  '.wgsl': 'text/plain; charset=utf-8',
  '.safetensors': 'application/octet-stream',
  '.gguf': 'application/octet-stream',
  '.bin': 'application/octet-stream',
};

// The page's files, as paths under the root ('/'-separated; a folder covers what is inside); "/" is
// index.html. startServer({extraPaths}) adds more (the browser tests add tests/fixtures/models).
export const PAGE_ENTRIES = ['index.html', 'www', 'models'];

// Same policy as index.html's <meta> CSP, plus frame-ancestors, which only works as a header.
export const CONTENT_SECURITY_POLICY =
  "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self'; style-src 'self'; " +
  "img-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; " +
  "frame-ancestors 'none'";

export const SECURITY_HEADERS = {
  'Content-Security-Policy': CONTENT_SECURITY_POLICY,
  'X-Content-Type-Options': 'nosniff',
  'X-Frame-Options': 'DENY',
  'Referrer-Policy': 'no-referrer',
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
  'Cross-Origin-Resource-Policy': 'same-origin',
};

// Loopback names only: localhost (and *.localhost, which browsers resolve to loopback themselves),
// 127.0.0.0/8 and [::1], with an optional port.
const LOOPBACK_HOST = /^(?:localhost|[a-z0-9-]+\.localhost|127(?:\.(?:25[0-5]|2[0-4]\d|1?\d?\d)){3}|\[::1\])(?::\d{1,5})?$/i;

/** True when a Host header names this machine by a loopback name. A missing Host is refused. */
export function isLoopbackHost(host) {
  return typeof host === 'string' && LOOPBACK_HOST.test(host);
}

function contentType(file) {
  return MIME_TYPES[path.extname(file).toLowerCase()] ?? 'application/octet-stream';
}

function send(res, status, body, headers = {}) {
  res.writeHead(status, { ...SECURITY_HEADERS, 'Content-Type': 'text/plain; charset=utf-8', ...headers });
  res.end(body);
}

// Maps a request path to {file, rel}: a file strictly inside `root` and under one of PAGE_ENTRIES, with
// `rel` its normalised path relative to the root ('' for the root itself, '/'-separated); or null.
function resolveInside(root, urlPath, allowed) {
  let decoded;
  try {
    decoded = decodeURIComponent(urlPath);
  } catch {
    return null; // malformed percent-encoding
  }
  if (decoded.includes('\0')) return null;
  const file = path.resolve(root, '.' + path.posix.normalize('/' + decoded.replace(/\\/g, '/')));
  const rel = path.relative(root, file);
  if (rel.startsWith('..') || path.isAbsolute(rel)) return null;
  // No dot-files or dot-folders (.git, .ci, ...): they are not part of the page.
  const parts = rel === '' ? [] : rel.split(path.sep);
  if (parts.some((part) => part.startsWith('.'))) return null;
  // Only the page's files: not target/, src/, Cargo.toml, ...
  const relPath = parts.join('/');
  if (parts.length > 0 && !allowed.some((a) => relPath === a || relPath.startsWith(`${a}/`))) {
    return null;
  }
  return { file, rel: relPath };
}

function handler(root, allowed) {
  return (req, res) => {
    if (!isLoopbackHost(req.headers.host)) {
      return send(res, 403, 'this server only answers to a loopback Host (localhost, 127.0.0.1, [::1])\n');
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      return send(res, 405, 'method not allowed\n', { Allow: 'GET, HEAD' });
    }
    let pathname;
    try {
      pathname = new URL(req.url, 'http://localhost').pathname;
    } catch {
      return send(res, 400, 'bad request\n');
    }
    const found = resolveInside(root, pathname, allowed);
    if (!found) return send(res, 404, 'not found\n');
    let { file } = found;
    fs.stat(file, (err, st) => {
      if (!err && st.isDirectory()) {
        if (!pathname.endsWith('/')) {
          // The Location is built from the normalised path, never from the request: "/.//www" must not
          // answer "//www/", which a browser reads as the host "www".
          return send(res, 301, '', { Location: found.rel ? `/${found.rel}/` : '/' });
        }
        file = path.join(file, 'index.html');
        return fs.stat(file, (err2, st2) => serveFile(req, res, file, err2 ? null : st2));
      }
      serveFile(req, res, file, err ? null : st);
    });
  };
}

function serveFile(req, res, file, st) {
  if (!st || !st.isFile()) return send(res, 404, 'not found\n');
  res.writeHead(200, {
    ...SECURITY_HEADERS,
    'Content-Type': contentType(file),
    'Content-Length': st.size,
    'Cache-Control': 'no-cache',
  });
  if (req.method === 'HEAD') return res.end();
  const stream = fs.createReadStream(file);
  stream.on('error', () => res.destroy());
  stream.pipe(res);
}

/**
 * Starts the server. Resolves to {url, port, server, close()}; port 0 picks a free port. extraPaths: more
 * paths to serve besides PAGE_ENTRIES (e.g. 'tests/fixtures/models').
 */
export function startServer({ root = REPO_ROOT, port = 8080, host = '127.0.0.1', extraPaths = [] } = {}) {
  const absRoot = path.resolve(root);
  const server = http.createServer(handler(absRoot, [...PAGE_ENTRIES, ...extraPaths]));
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      const actual = server.address().port;
      resolve({
        url: `http://${host}:${actual}/`,
        port: actual,
        server,
        close: () =>
          new Promise((done) => {
            server.close(() => done());
            server.closeAllConnections?.();
          }),
      });
    });
  });
}

function parseArgs(argv) {
  const opts = { port: process.env.PORT !== undefined ? Number(process.env.PORT) : 8080, root: REPO_ROOT };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      if (a.includes('=')) return a.slice(a.indexOf('=') + 1);
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--port' || a.startsWith('--port=')) opts.port = Number(val());
    else if (a === '--root' || a.startsWith('--root=')) opts.root = path.resolve(val());
    else if (a === '-h' || a === '--help') {
      console.log('usage: node scripts/serve.mjs [--port N] [--root DIR]   (PORT env also works; 0 = any free port)');
      process.exit(0);
    } else throw new Error(`unknown argument: ${a}`);
  }
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) {
    throw new Error(`bad port: ${opts.port}`);
  }
  return opts;
}

const isMain = process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href;
if (isMain) {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (e) {
    console.error(`serve.mjs: ${e.message}`);
    process.exit(2);
  }
  startServer(opts).then(
    ({ url, close }) => {
      console.log(`tinyformer playground: ${url}`);
      const stop = () => close().then(() => process.exit(0));
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
    },
    (e) => {
      console.error(`serve.mjs: cannot listen on 127.0.0.1:${opts.port}: ${e.message}`);
      process.exit(1);
    },
  );
}
