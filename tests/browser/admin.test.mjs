// The admin page (docs/ADMIN.md) in headless Chromium (Debian's `chromium`),
// driven by playwright-core, against the real router binary: a non-admin
// login is refused; an admin logs in (salted WAMP-CRA, computed by the page
// with WebCrypto), sees a session appear and disappear, a queue's depth
// change, requeues a dead job and kills a session. Screenshots go to
// target/browser-artifacts/ (or $SWITCHYARD_BROWSER_ARTIFACTS).
//
// Run: SWITCHYARD_BIN=target/debug/switchyard node --experimental-websocket --test tests/browser/

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

import { hashSecret, startRouter } from '../interop/js/router.mjs';
import { connect } from './wampclient.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..');
const ARTIFACTS = process.env.SWITCHYARD_BROWSER_ARTIFACTS || path.join(REPO, 'target', 'browser-artifacts');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const STEP = 10000; // the longest any one expectation may wait, ms

const SALT = 'admin-salt';
const ADMIN = { authid: 'admin', secret: 'admin-cra-secret' };
const ALICE = { authid: 'alice', secret: 'alice-ticket' };
const APP = { authid: 'app', secret: 'app-ticket' };
const AUDITOR = { authid: 'auditor', secret: 'auditor-ticket' };

let router;
let browser;
let page;
let adminUrl;
const clients = [];

function ticketPrincipal(p, role) {
  const h = hashSecret(p.secret);
  assert.equal(h.status, 0, h.stderr);
  return { authid: p.authid, secret: h.stdout, role };
}

async function shot(name) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const file = path.join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

async function client(who) {
  const c = await connect(router.wsUrl, 'realm1', who ? { authid: who.authid, ticket: who.secret } : {});
  clients.push(c);
  return c;
}

async function view(name) {
  await page.click(`#tabs button[data-view="${name}"]`);
  await page.waitForSelector(`#view-${name}:not([hidden])`, { timeout: STEP });
}

async function login(method, who) {
  await page.goto(adminUrl);
  await page.waitForFunction(() => document.getElementById('login-realm').textContent === 'realm1', null, { timeout: STEP });
  await page.selectOption('#authmethod', method);
  await page.fill('#authid', who.authid);
  await page.fill('#secret', who.secret);
  await page.click('#login-button');
}

const queueCell = (queue, field) => page.locator(`#queues-table tr[data-queue="${queue}"] td[data-field="${field}"]`);

before(async () => {
  const cra = hashSecret(ADMIN.secret, ['--method', 'wampcra', '--salt', SALT]);
  assert.equal(cra.status, 0, cra.stderr);
  router = await startRouter('browser-admin', {
    realms: [{
      name: 'realm1',
      auth: {
        methods: ['ticket', 'wampcra', 'anonymous'],
        anonymous_role: 'app',
        ticket: [ticketPrincipal(ALICE, 'user'), ticketPrincipal(APP, 'app'), ticketPrincipal(AUDITOR, 'auditor')],
        wampcra: [{ authid: ADMIN.authid, secret: cra.stdout, salt: SALT, iterations: 1000, keylen: 32, role: 'admin' }],
      },
      role: [
        {
          name: 'admin',
          permission: [
            { uri: 'wamp.', match: 'prefix', allow: ['call', 'subscribe'] },
            { uri: 'switchyard.queue.', match: 'prefix', allow: ['call'] },
          ],
        },
        { name: 'user', permission: [{ uri: 'com.app.', match: 'prefix', allow: ['call', 'subscribe'] }] },
        // May read the meta API, but is not the page's [admin] role.
        { name: 'auditor', permission: [{ uri: 'wamp.', match: 'prefix', allow: ['call', 'subscribe'] }] },
        {
          name: 'app',
          permission: [
            { uri: 'com.test.', match: 'prefix', allow: ['call', 'register', 'subscribe', 'publish'] },
            { uri: 'switchyard.queue.push', match: 'prefix', allow: ['call'] },
          ],
        },
      ],
      queue: [
        { name: 'jobs', target: 'com.test.work', max_attempts: 1, retry: { kind: 'none' } },
        { name: 'mail', target: 'com.test.mail' },
      ],
    }],
    tables: { admin: { path: '/admin', role: 'admin' } },
  });
  adminUrl = `http://127.0.0.1:${router.wsPort}/admin/`;
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'], headless: true });
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  page = await context.newPage();
  page.on('pageerror', (e) => console.error('page error:', e));
});

after(async () => {
  for (const c of clients) await c.leave().catch(() => {});
  if (browser) await browser.close();
  if (router) await router.stop();
});

test('a non-admin login is refused with a clear message', { timeout: 30000 }, async () => {
  // The router refuses the role the meta API; the page shows its answer.
  await login('ticket', ALICE);
  const error = page.locator('#login-error');
  await error.waitFor({ state: 'visible', timeout: STEP });
  let text = await error.textContent();
  assert.match(text, /Refused: the router does not let the role "user" call wamp\.session\.list/);
  assert.match(text, /wamp\.error\.not_authorized/);
  assert.equal(await page.locator('#app').isHidden(), true);
  await shot('admin-refused');
  // Any client gets the same answer: the page holds no privilege.
  const alice = await client(ALICE);
  await assert.rejects(alice.call('wamp.session.list'), /wamp.error.not_authorized/);
  await alice.leave();
  // A role that may read the meta API but is not the page's [admin] role.
  await login('ticket', AUDITOR);
  await page.waitForFunction(() => /needs the role "admin"/.test(document.getElementById('login-error').textContent), null, { timeout: STEP });
  text = await error.textContent();
  assert.match(text, /Refused: you logged in as "auditor" with the role "auditor"/);
  assert.equal(await page.locator('#app').isHidden(), true);
});

test('an admin logs in with WAMP-CRA and sees sessions come and go', { timeout: 30000 }, async () => {
  await login('wampcra', ADMIN);
  await page.locator('#app').waitFor({ state: 'visible', timeout: STEP });
  assert.match(await page.locator('#who-text').textContent(), /admin \(admin\)/);
  await view('sessions');
  const row = page.locator('#sessions-table tr[data-authid="app"]');
  assert.equal(await row.count(), 0);
  const app = await client(APP);
  await row.waitFor({ state: 'visible', timeout: STEP });
  const cells = await row.locator('td').allTextContents();
  assert.equal(cells[0], String(app.id));
  assert.equal(cells[2], 'app');
  assert.match(cells[4], /websocket \/ json/);
  assert.equal(cells[5], '127.0.0.1');
  await shot('admin-sessions');
  await app.leave();
  await row.waitFor({ state: 'detached', timeout: STEP });
});

test('registrations and subscriptions with their sessions', { timeout: 30000 }, async () => {
  const worker = await client(APP);
  await worker.register('com.test.echo', (args) => [args]);
  await worker.subscribe('com.test.news');
  await view('registrations');
  const reg = page.locator('#registrations-table tr[data-uri="com.test.echo"]');
  await reg.waitFor({ state: 'visible', timeout: STEP });
  assert.match(await reg.textContent(), new RegExp(`${worker.id} \\(app\\)`));
  await shot('admin-registrations');
  await view('subscriptions');
  const sub = page.locator('#subscriptions-table tr[data-uri="com.test.news"]');
  await sub.waitFor({ state: 'visible', timeout: STEP });
  assert.match(await sub.textContent(), new RegExp(`${worker.id} \\(app\\)`));
  await shot('admin-subscriptions');
  // What clients name is shown as text, never run as HTML.
  const hostile = 'com.test.<img/src/onerror=window.__xss=1>';
  await worker.subscribe(hostile);
  const row = page.locator('#subscriptions-table tr', { hasText: '<img/src/onerror' });
  await row.waitFor({ state: 'visible', timeout: STEP });
  assert.equal(await page.locator('#subscriptions-table img').count(), 0);
  assert.equal(await page.evaluate(() => window.__xss), undefined);
  await worker.leave();
  await sub.waitFor({ state: 'detached', timeout: STEP });
});

test('a queue\'s depth changes and a dead job is requeued', { timeout: 40000 }, async () => {
  await view('queues');
  await queueCell('jobs', 'ready').waitFor({ state: 'visible', timeout: STEP });
  assert.equal(await queueCell('jobs', 'ready').textContent(), '0');
  const producer = await client(APP);
  for (let i = 0; i < 3; i++) await producer.call('switchyard.queue.push', ['jobs'], { args: [i, 'report'] });
  await page.waitForFunction(() => document.querySelector('#queues-table tr[data-queue="jobs"] td[data-field="ready"]')?.textContent === '3', null, { timeout: STEP });
  await shot('admin-queues');

  // A worker that fails every job: with max_attempts = 1 they die.
  const worker = await client(APP);
  await worker.register('com.test.work', () => { throw Object.assign(new Error('boom'), { uri: 'com.test.failed', args: ['cannot render'] }); });
  await page.waitForFunction(() => document.querySelector('#queues-table tr[data-queue="jobs"] td[data-field="dead"]')?.textContent === '3', null, { timeout: STEP });
  await worker.leave();

  await page.click('#queues-table tr[data-queue="jobs"] button');
  await page.locator('#dead-table tr[data-job]').first().waitFor({ state: 'visible', timeout: STEP });
  assert.equal(await page.locator('#dead-table tr[data-job]').count(), 3);
  assert.match(await page.locator('#dead-table').textContent(), /com\.test\.failed: cannot render/);
  await shot('admin-queue-dead');
  await page.locator('#dead-table tr[data-job] button.requeue').first().click();
  await page.waitForFunction(() => document.querySelector('#queues-table tr[data-queue="jobs"] td[data-field="ready"]')?.textContent === '1'
    && document.querySelector('#queues-table tr[data-queue="jobs"] td[data-field="dead"]')?.textContent === '2', null, { timeout: STEP });
  assert.match(await page.locator('#queue-message').textContent(), /requeued 1 job/);
  assert.equal(await page.locator('#ready-table tr[data-job]').count(), 1);
  assert.equal(await page.locator('#dead-table tr[data-job]').count(), 2);
  await shot('admin-queue-requeued');
  await producer.leave();
});

test('a session is killed from the page', { timeout: 30000 }, async () => {
  const victim = await client(APP);
  await view('sessions');
  const button = page.locator(`#sessions-table tr[data-session="${victim.id}"] button.kill`);
  await button.waitFor({ state: 'visible', timeout: STEP });
  await button.click(); // arms
  await button.click(); // kills
  const closed = await Promise.race([victim.closed, new Promise((r) => setTimeout(() => r(null), STEP))]);
  assert.ok(closed, 'the killed client was not disconnected');
  await page.locator(`#sessions-table tr[data-session="${victim.id}"]`).waitFor({ state: 'detached', timeout: STEP });
});

test('the message-rate chart follows live traffic', { timeout: 30000 }, async () => {
  const callee = await client(APP);
  await callee.register('com.test.echo2', (args) => [args]);
  const caller = await client(APP);
  await view('overview');
  const until = Date.now() + 5000;
  while (Date.now() < until) {
    await Promise.all(Array.from({ length: 10 }, (_, i) => caller.call('com.test.echo2', [i])));
    await new Promise((r) => setTimeout(r, 50));
  }
  // A sample well above zero has been drawn: the zero line is the lowest
  // grid line (chart.js), the highest point of the "in" series is above it.
  const drawn = await page.evaluate(() => {
    const grid = [...document.querySelectorAll('#rate-chart line.grid')].map((l) => Number(l.getAttribute('y1')));
    const pts = document.querySelector('#rate-chart polyline.in')?.getAttribute('points') || '';
    const ys = pts.split(' ').filter(Boolean).map((p) => Number(p.split(',')[1]));
    const top = document.querySelectorAll('#rate-chart text.axis')[4]?.textContent;
    return { zero: Math.max(...grid), highest: ys.length ? Math.min(...ys) : null, top };
  });
  assert.ok(drawn.highest !== null && drawn.highest < drawn.zero - 20,
    `no traffic drawn in the chart: ${JSON.stringify(drawn)}`);
  assert.ok(Number(drawn.top.replace('k', '000')) >= 50, `axis maximum ${drawn.top}: expected tens of messages/s`);
  await shot('admin-overview');
  await caller.leave();
  await callee.leave();
});
