// scripts/serve.mjs: MIME types, no escape from the root, 127.0.0.1 only. No browser needed.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import { startServer } from '../../scripts/serve.mjs';

let root;
let server;
before(async () => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'tinyformer-serve-'));
  const files = {
    'index.html': '<!doctype html><title>t</title>',
    'a.js': 'export {}',
    'b.mjs': 'export {}',
    'c.wasm': '\0asm',
    'd.css': 'body{}',
    'e.json': '{}',
    'f.png': 'png',
    'g.safetensors': 'st',
    'sub/index.html': 'sub',
    'sub dir/x y.txt': 'spaced',
    '.secret': 'hidden',
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

// A raw HTTP request, so that "..", "%2e%2e" and backslashes reach the server unnormalised.
function rawGet(p) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(server.port, '127.0.0.1', () => {
      sock.write(`GET ${p} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`);
    });
    let data = '';
    sock.on('data', (d) => { data += d; });
    sock.on('end', () => resolve({ status: Number(data.split(' ')[1]), body: data.split('\r\n\r\n').slice(1).join('\r\n\r\n') }));
    sock.on('error', reject);
  });
}

test('listens on 127.0.0.1 with the port it was given (0 = a free one)', () => {
  assert.match(server.url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
  assert.ok(server.port > 0);
  assert.equal(server.server.address().address, '127.0.0.1');
});

test('serves files with the right MIME types', async () => {
  const expected = {
    '': 'text/html',
    'index.html': 'text/html',
    'a.js': 'text/javascript',
    'b.mjs': 'text/javascript',
    'c.wasm': 'application/wasm',
    'd.css': 'text/css',
    'e.json': 'application/json',
    'f.png': 'image/png',
    'g.safetensors': 'application/octet-stream',
    'sub/': 'text/html',
    'sub%20dir/x%20y.txt': 'text/plain',
  };
  for (const [p, type] of Object.entries(expected)) {
    const res = await fetch(server.url + p);
    assert.equal(res.status, 200, p);
    assert.equal(res.headers.get('content-type').split(';')[0], type, p);
    await res.arrayBuffer();
  }
  const head = await fetch(server.url + 'c.wasm', { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(head.headers.get('content-length'), '4');
});

test('never serves anything outside the root, nor dot-files', async () => {
  const outside = `${path.basename(root)}-outside.txt`;
  for (const p of [
    `/../${outside}`,
    `/%2e%2e/${outside}`,
    `/sub/../../${outside}`,
    `/..%2f${outside}`,
    `/..%5c${outside}`,
    `/%2e%2e%5c${outside}`,
    '/../../../../etc/passwd',
    '/%2e%2e/%2e%2e/%2e%2e/etc/passwd',
    '/.secret',
    '/%00',
    '/%zz',
    '/missing.js',
  ]) {
    const res = await rawGet(p);
    assert.ok(res.status === 404 || res.status === 400, `${p} gave ${res.status}`);
    assert.ok(!res.body.includes('outside') && !res.body.includes('root:'), `${p} leaked a file`);
  }
  assert.equal((await rawGet('/sub')).status, 301);
  assert.equal((await fetch(server.url + 'a.js', { method: 'POST' })).status, 405);
});
