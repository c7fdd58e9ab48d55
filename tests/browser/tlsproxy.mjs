// A TLS-terminating reverse proxy for the browser tests, standing in for
// nginx in front of the router (docs/ADMIN.md): https:// and wss:// on the
// outside, the router's plain HTTP/WebSocket listener inside, everything
// served under a path prefix that the proxy strips. A throwaway self-signed
// certificate for 127.0.0.1 is made with the openssl command.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

/** A self-signed certificate for 127.0.0.1: { key, cert } (PEM). */
export function selfSigned() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sy-tls-'));
  const key = path.join(dir, 'key.pem');
  const cert = path.join(dir, 'cert.pem');
  const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256',
    '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1',
    '-addext', 'subjectAltName=IP:127.0.0.1'], { encoding: 'utf8', timeout: 30000 });
  if (r.status !== 0) throw new Error(`openssl failed: ${r.stderr || r.error}`);
  const pems = { key: fs.readFileSync(key), cert: fs.readFileSync(cert) };
  fs.rmSync(dir, { recursive: true, force: true });
  return pems;
}

/** Proxies https://127.0.0.1:<port><prefix>/... to http://127.0.0.1:<targetPort>/... */
export async function startTlsProxy({ prefix, targetPort }) {
  const strip = (url) => (url.startsWith(`${prefix}/`) ? url.slice(prefix.length) : null);
  const server = https.createServer(selfSigned(), (req, res) => {
    const p = strip(req.url);
    if (p === null) { res.writeHead(404); res.end('not under the prefix\n'); return; }
    const up = http.request({
      host: '127.0.0.1', port: targetPort, path: p, method: req.method,
      headers: { ...req.headers, 'x-forwarded-proto': 'https' },
    }, (r) => { res.writeHead(r.statusCode, r.headers); r.pipe(res); });
    up.on('error', () => { res.writeHead(502); res.end(); });
    req.pipe(up);
  });
  server.on('upgrade', (req, socket, head) => {
    const p = strip(req.url);
    if (p === null) { socket.destroy(); return; }
    const up = net.connect(targetPort, '127.0.0.1', () => {
      const lines = [`${req.method} ${p} HTTP/1.1`];
      for (let i = 0; i < req.rawHeaders.length; i += 2) lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
      up.write(`${lines.join('\r\n')}\r\n\r\n`);
      if (head && head.length) up.write(head);
      up.pipe(socket);
      socket.pipe(up);
    });
    up.on('error', () => socket.destroy());
    socket.on('error', () => up.destroy());
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  return {
    origin: `https://127.0.0.1:${port}`,
    close: () => new Promise((resolve) => { server.closeAllConnections?.(); server.close(resolve); }),
  };
}
