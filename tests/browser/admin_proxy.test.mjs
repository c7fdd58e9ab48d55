// The admin page behind a TLS-terminating reverse proxy that serves the
// router under a path prefix (tlsproxy.mjs, as the nginx snippet in
// docs/ADMIN.md does): the page's relative URLs and its wss:// WebSocket,
// chosen from location.protocol, reach the router through the proxy.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

import { hashSecret, startRouter } from '../interop/js/router.mjs';
import { startTlsProxy } from './tlsproxy.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ARTIFACTS = process.env.SWITCHYARD_BROWSER_ARTIFACTS || path.join(HERE, '..', '..', 'target', 'browser-artifacts');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const STEP = 10000;
const OPS = { authid: 'ops', secret: 'ops-ticket' };

let router;
let proxy;
let browser;

before(async () => {
  const h = hashSecret(OPS.secret);
  assert.equal(h.status, 0, h.stderr);
  router = await startRouter('browser-admin-proxy', {
    realms: [{
      name: 'realm1',
      auth: { methods: ['ticket'], ticket: [{ authid: OPS.authid, secret: h.stdout, role: 'admin' }] },
      role: [{ name: 'admin', permission: [{ uri: 'wamp.', match: 'prefix', allow: ['call', 'subscribe'] }] }],
    }],
    tables: { admin: { path: '/admin' } },
  });
  proxy = await startTlsProxy({ prefix: '/switchyard', targetPort: router.wsPort });
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'], headless: true });
});

after(async () => {
  if (browser) await browser.close();
  if (proxy) await proxy.close();
  if (router) await router.stop();
});

test('the page works over https under a prefix, its WebSocket over wss', { timeout: 30000 }, async () => {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 600 } });
  const page = await context.newPage();
  const sockets = [];
  page.on('websocket', (ws) => sockets.push(ws.url()));
  // Without the trailing slash: the router's relative redirect keeps the prefix.
  await page.goto(`${proxy.origin}/switchyard/admin`);
  assert.equal(new URL(page.url()).pathname, '/switchyard/admin/');
  await page.waitForFunction(() => document.getElementById('login-realm').textContent === 'realm1', null, { timeout: STEP });
  await page.selectOption('#authmethod', 'ticket');
  await page.fill('#authid', OPS.authid);
  await page.fill('#secret', OPS.secret);
  await page.click('#login-button');
  await page.locator('#app').waitFor({ state: 'visible', timeout: STEP });
  assert.deepEqual(sockets, [`wss://127.0.0.1:${new URL(proxy.origin).port}/switchyard/ws`]);
  await page.click('#tabs button[data-view="sessions"]');
  await page.locator('#sessions-table tr[data-authid="ops"]').waitFor({ state: 'visible', timeout: STEP });
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: path.join(ARTIFACTS, 'admin-behind-tls-proxy.png'), fullPage: true });
  await context.close();
});
