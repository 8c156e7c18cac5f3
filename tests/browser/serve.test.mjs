// scripts/serve.mjs: MIME types, no escape from the root, only the page's files, loopback Host only, no open
// redirect, security headers on every response, 127.0.0.1 only. No browser needed (the page under these
// headers is checked by the other browser tests, which all go through this server).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import { startServer, isLoopbackHost } from '../../scripts/serve.mjs';

let root;
let server;
before(async () => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'tinyformer-serve-'));
  const files = {
    'index.html': '<!doctype html><title>t</title>',
    'www/a.js': 'export {}',
    'www/b.mjs': 'export {}',
    'www/pkg/c.wasm': '\0asm',
    'www/d.css': 'body{}',
    'www/e.json': '{}',
    'www/f.png': 'png',
    'models/g.safetensors': 'st',
    'www/sub/index.html': 'sub',
    'www/sub dir/x y.txt': 'spaced',
    'www/.secret': 'hidden',
    // The rest of a repository: never served.
    '.git/config': 'gitconfig',
    'target/release/tinyformer': 'binary',
    'src/lib.rs': 'rust source',
    'Cargo.toml': 'cargo manifest',
    'README.md': 'readme',
    'tests/fixtures/x.safetensors': 'fixture',
  };
  for (const [name, body] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(root, name)), { recursive: true });
    fs.writeFileSync(path.join(root, name), body);
  }
  // A file next to the root that must never be reachable.
  fs.writeFileSync(path.join(path.dirname(root), `${path.basename(root)}-outside.txt`), 'outside');
  server = await startServer({ root, port: 0 });
});
after(async () => {
  await server?.close();
  fs.rmSync(root, { recursive: true, force: true });
  fs.rmSync(path.join(path.dirname(root), `${path.basename(root)}-outside.txt`), { force: true });
});

// A raw HTTP request, so that "..", "%2e%2e", backslashes and any Host header reach the server unnormalised.
function rawGet(p, { host = '127.0.0.1' } = {}) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(server.port, '127.0.0.1', () => {
      const hostLine = host === null ? '' : `Host: ${host}\r\n`;
      sock.write(`GET ${p} HTTP/1.1\r\n${hostLine}Connection: close\r\n\r\n`);
    });
    let data = '';
    sock.on('data', (d) => { data += d; });
    sock.on('end', () => {
      const [head, ...rest] = data.split('\r\n\r\n');
      const headers = {};
      for (const line of head.split('\r\n').slice(1)) {
        const i = line.indexOf(':');
        headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
      }
      resolve({ status: Number(data.split(' ')[1]), headers, body: rest.join('\r\n\r\n') });
    });
    sock.on('error', reject);
  });
}

test('listens on 127.0.0.1 with the port it was given (0 = a free one)', () => {
  assert.match(server.url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
  assert.ok(server.port > 0);
  assert.equal(server.server.address().address, '127.0.0.1');
});

test('serves the page files with the right MIME types', async () => {
  const expected = {
    '': 'text/html',
    'index.html': 'text/html',
    'www/a.js': 'text/javascript',
    'www/b.mjs': 'text/javascript',
    'www/pkg/c.wasm': 'application/wasm',
    'www/d.css': 'text/css',
    'www/e.json': 'application/json',
    'www/f.png': 'image/png',
    'models/g.safetensors': 'application/octet-stream',
    'www/sub/': 'text/html',
    'www/sub%20dir/x%20y.txt': 'text/plain',
  };
  for (const [p, type] of Object.entries(expected)) {
    const res = await fetch(server.url + p);
    assert.equal(res.status, 200, p);
    assert.equal(res.headers.get('content-type').split(';')[0], type, p);
    await res.arrayBuffer();
  }
  const head = await fetch(server.url + 'www/pkg/c.wasm', { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(head.headers.get('content-length'), '4');
});

test('never serves anything outside the root, nor dot-files', async () => {
  const outside = `${path.basename(root)}-outside.txt`;
  for (const p of [
    `/../${outside}`,
    `/%2e%2e/${outside}`,
    `/www/../../${outside}`,
    `/..%2f${outside}`,
    `/..%5c${outside}`,
    `/%2e%2e%5c${outside}`,
    '/../../../../etc/passwd',
    '/%2e%2e/%2e%2e/%2e%2e/etc/passwd',
    '/www/.secret',
    '/%00',
    '/%zz',
    '/www/missing.js',
  ]) {
    const res = await rawGet(p);
    assert.ok(res.status === 404 || res.status === 400, `${p} gave ${res.status}`);
    assert.ok(!res.body.includes('outside') && !res.body.includes('root:'), `${p} leaked a file`);
  }
  assert.equal((await fetch(server.url + 'www/a.js', { method: 'POST' })).status, 405);
});

test('serves only the page: not .git, target/, src/, tests/ or the repository files', async () => {
  for (const p of [
    '/.git/config', '/%2egit/config', '/.git/', '/target/release/tinyformer', '/target/', '/src/lib.rs',
    '/Cargo.toml', '/README.md', '/tests/fixtures/x.safetensors', '/www/../src/lib.rs', '/www/%2e%2e/Cargo.toml',
    '/models/../target/release/tinyformer', '/TARGET/release/tinyformer',
  ]) {
    const res = await rawGet(p);
    assert.equal(res.status, 404, `${p} gave ${res.status}`);
    for (const secret of ['gitconfig', 'binary', 'rust source', 'cargo manifest', 'readme', 'fixture']) {
      assert.ok(!res.body.includes(secret), `${p} leaked ${secret}`);
    }
  }
});

test('directory redirects stay on this host: no open redirect', async () => {
  const cases = {
    '/www': '/www/',
    '/.//www': '/www/',
    '//www': '/www/',
    '/./www': '/www/',
    '/www//sub': '/www/sub/',
    '/models/..//www': '/www/',
    '/%2e': '/',
    '/%2e/%2e': '/',
  };
  for (const [p, location] of Object.entries(cases)) {
    const res = await rawGet(p);
    if (res.status === 301) {
      assert.equal(res.headers.location, location, p);
    } else {
      assert.equal(res.status, 200, `${p} gave ${res.status}`); // served the directory's index
    }
    // A Location beginning with "//" or "/\" is another host to a browser.
    assert.ok(!/^\/[/\\]/.test(res.headers.location ?? ''), `${p} redirected to ${res.headers.location}`);
  }
  assert.equal((await rawGet('/.//www')).status, 301);
  assert.equal((await rawGet('/.//www')).headers.location, '/www/');
});

test('refuses a Host that is not a loopback name (DNS rebinding)', async () => {
  for (const host of ['evil.example', 'evil.example:8080', '127.0.0.1.evil.example', 'localhost.evil.example',
    '10.0.0.1', '0.0.0.0', '[::2]', 'localhost@evil.example', '']) {
    const res = await rawGet('/index.html', { host });
    assert.equal(res.status, 403, `Host ${JSON.stringify(host)} gave ${res.status}`);
    assert.ok(!res.body.includes('<title>'), `Host ${host} got the page`);
    assert.match(res.body, /loopback Host/);
  }
  // HTTP/1.1 without any Host: refused too (by Node itself with 400, or by us with 403).
  const noHost = await rawGet('/index.html', { host: null });
  assert.ok(noHost.status === 400 || noHost.status === 403, `no Host gave ${noHost.status}`);
  for (const host of ['127.0.0.1', `127.0.0.1:${server.port}`, 'localhost', `localhost:${server.port}`, 'LOCALHOST',
    `[::1]:${server.port}`, '127.1.2.3', 'app.localhost']) {
    const res = await rawGet('/index.html', { host });
    assert.equal(res.status, 200, `Host ${host} gave ${res.status}`);
  }
  assert.equal(isLoopbackHost('127.0.0.1:8080'), true);
  assert.equal(isLoopbackHost('127.0.0.256'), false);
  assert.equal(isLoopbackHost(undefined), false);
});

test('every response carries CSP with frame-ancestors, nosniff and COOP/COEP', async () => {
  for (const p of ['/', '/www/a.js', '/www/pkg/c.wasm', '/models/g.safetensors', '/www/missing.js', '/www', '/target/']) {
    const res = await rawGet(p);
    const h = res.headers;
    const csp = h['content-security-policy'] ?? '';
    assert.match(csp, /frame-ancestors 'none'/, p);
    assert.match(csp, /default-src 'self'/, p);
    assert.match(csp, /script-src 'self' 'wasm-unsafe-eval'/, p);
    assert.ok(!/https?:|\*/.test(csp), `${p}: the CSP must not allow remote origins: ${csp}`);
    assert.equal(h['x-content-type-options'], 'nosniff', p);
    assert.equal(h['x-frame-options'], 'DENY', p);
    assert.equal(h['cross-origin-opener-policy'], 'same-origin', p);
    assert.equal(h['cross-origin-embedder-policy'], 'require-corp', p);
    assert.equal(h['cross-origin-resource-policy'], 'same-origin', p);
  }
  // The 403 for a foreign Host carries them too.
  assert.equal((await rawGet('/', { host: 'evil.example' })).headers['x-content-type-options'], 'nosniff');
});

test('the header CSP and the page\'s <meta> CSP agree (the header only adds frame-ancestors)', async () => {
  const { CONTENT_SECURITY_POLICY } = await import('../../scripts/serve.mjs');
  const html = fs.readFileSync(new URL('../../index.html', import.meta.url), 'utf8');
  const meta = html.match(/http-equiv="Content-Security-Policy"\s+content="([^"]+)"/)[1];
  assert.equal(CONTENT_SECURITY_POLICY, `${meta}; frame-ancestors 'none'`);
});

test('extraPaths adds exactly those paths (the browser tests serve tests/fixtures/models)', async () => {
  fs.mkdirSync(path.join(root, 'tests/fixtures/models'), { recursive: true });
  fs.writeFileSync(path.join(root, 'tests/fixtures/models/m.safetensors'), 'model');
  const extra = await startServer({ root, port: 0, extraPaths: ['tests/fixtures/models'] });
  try {
    const ok = await fetch(`${extra.url}tests/fixtures/models/m.safetensors`);
    assert.equal(ok.status, 200);
    assert.equal(await ok.text(), 'model');
    for (const p of ['tests/fixtures/x.safetensors', 'tests/fixtures/models/../x.safetensors', 'src/lib.rs', 'tests/']) {
      const res = await fetch(extra.url + p);
      assert.equal(res.status, 404, p);
      await res.arrayBuffer();
    }
  } finally {
    await extra.close();
  }
  // The default server does not serve them.
  assert.equal((await rawGet('/tests/fixtures/models/m.safetensors')).status, 404);
});
