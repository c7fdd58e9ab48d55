// docs/PHP.md's three scenarios, end to end, with the very files the page shows
// (examples/php/): the router runs examples/php/switchyard.toml (ports moved with
// SWITCHYARD__... variables), the PHP scripts run with the php CLI, the browser side is
// Autobahn|JS, and the PDF endpoint is served by `php -S`.

import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import autobahn from 'autobahn';
import { freePort, routerBin } from './router.mjs';
import { connectNotifications } from '../../../examples/php/notifications.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const EXAMPLES = path.resolve(HERE, '..', '..', '..', 'examples', 'php');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let router;
let app;
let wsUrl;
let env;

async function waitPort(port) {
  const net = await import('node:net');
  const deadline = Date.now() + 15000;
  while (Date.now() < deadline) {
    const ok = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => { s.end(); resolve(true); });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    await sleep(50);
  }
  throw new Error(`nothing listens on ${port}`);
}

// Asynchronous: the scenario's WAMP clients live in this process and must keep running
// while a script waits for them.
async function php(script, ...args) {
  return runPhp(env, script, ...args);
}

async function runPhp(environment, script, ...args) {
  const { stdout } = await promisify(execFile)('php', [path.join(EXAMPLES, script), ...args.map(String)],
    { env: environment, encoding: 'utf8', timeout: 20000 });
  return stdout.trim();
}

before(async () => {
  const [ws, bridge, appPort] = [await freePort(), await freePort(), await freePort()];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'switchyard-php-scenarios-'));
  env = { ...process.env, SWITCHYARD_BRIDGE: `http://127.0.0.1:${bridge}` };
  const log = fs.openSync(path.join(dir, 'router.log'), 'a');
  router = spawn(routerBin(), ['--config', path.join(EXAMPLES, 'switchyard.toml'), '--data-dir', path.join(dir, 'data')], {
    stdio: ['ignore', log, log],
    env: {
      ...process.env,
      SWITCHYARD__LISTENER__0__ADDRESS: `127.0.0.1:${ws}`,
      SWITCHYARD__BRIDGE__0__ADDRESS: `127.0.0.1:${bridge}`,
      SWITCHYARD__REALM__0__QUEUE__0__TARGET__HTTP__URL: `http://127.0.0.1:${appPort}/render-pdf`,
    },
  });
  app = spawn('php', ['-S', `127.0.0.1:${appPort}`, path.join(EXAMPLES, 'render-pdf.php')], { stdio: 'ignore', env });
  wsUrl = `ws://127.0.0.1:${ws}/ws`;
  try {
    await Promise.all([waitPort(ws), waitPort(bridge), waitPort(appPort)]);
  } catch (e) {
    throw new Error(`${e.message}; router log:\n${fs.readFileSync(path.join(dir, 'router.log'), 'utf8')}`);
  }
});

after(() => {
  router?.kill('SIGTERM');
  app?.kill('SIGTERM');
});

test('scenario 1: a JWT login from the app, and notifications on the user\'s own topic only', async () => {
  const got = [];
  const alice = await connectNotifications(autobahn, wsUrl, await php('login.php', 'alice'),
    (message, kwargs) => got.push([message, kwargs]));
  try {
    const published = await php('notify.php', 'alice', 'Your order has shipped');
    assert.match(published, /^published \d+$/);
    for (let i = 0; i < 100 && got.length === 0; i++) await sleep(50);
    assert.equal(got.length, 1);
    assert.equal(got[0][0], 'Your order has shipped');
    assert.ok(got[0][1].at);

    // Bob, logged in the same way, cannot read Alice's topic.
    const bob = await connectNotifications(autobahn, wsUrl, await php('login.php', 'bob'), () => {});
    try {
      await assert.rejects(bob.session.subscribe('com.shop.user.alice.notifications', () => {}),
        (e) => e.error === 'wamp.error.not_authorized');
    } finally {
      bob.connection.close();
    }
  } finally {
    alice.connection.close();
  }
  // A token the app did not mint (another secret) is refused at login.
  const forged = await runPhp({ ...env, SWITCHYARD_JWT_SECRET: 'not-the-routers-secret-0123456789abcdef' },
    'login.php', 'alice');
  await assert.rejects(connectNotifications(autobahn, wsUrl, forged, () => {}), /authentication failed: bad signature/);
});

test('scenario 2: a PDF job, retried until the PHP endpoint renders it, and its state over HTTP', async () => {
  const order = 4000 + Math.floor(Math.random() * 1000);
  const job = JSON.parse(await php('order-paid.php', order));
  assert.equal(job.duplicate, false);
  assert.equal(job.location, `/queues/pdf/jobs/${job.id}`);
  const again = JSON.parse(await php('order-paid.php', order));
  assert.deepEqual([again.id, again.duplicate], [job.id, true]);
  let state;
  for (let i = 0; i < 100; i++) {
    state = JSON.parse(await php('job-status.php', job.id));
    if (state.state === 'completed') break;
    await sleep(100);
  }
  assert.equal(state.state, 'completed', JSON.stringify(state));
  assert.equal(state.attempts, 2);
  assert.deepEqual(JSON.parse(state.result.body), { pdf: `/invoices/${order}.pdf`, attempt: 2 });
});

test('scenario 3: a signed call to a procedure some WAMP service registered', async () => {
  const service = new autobahn.Connection({
    url: wsUrl, realm: 'shop', authmethods: ['ticket'], authid: 'pricing-service',
    onchallenge: () => 'dev-only-pricing-ticket', max_retries: 0,
  });
  const registered = new Promise((resolve, reject) => {
    service.onopen = (session) => session.register('com.shop.price',
      (args, kwargs, details) => ({ sku: args[0], cents: 1999 })).then(resolve, reject);
    service.onclose = (reason, details) => { reject(new Error(`${reason} ${details.message ?? ''}`)); return true; };
  });
  service.open();
  await registered;
  try {
    assert.deepEqual(JSON.parse(await php('signed-call.php', 'sku-7')), { price: { sku: 'sku-7', cents: 1999 } });
  } finally {
    service.close();
  }
});
