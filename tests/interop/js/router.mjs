// Starts / stops a Switchyard router for the Autobahn|JS interop tests.
//
//   const r = await startRouter('name', { limits: {...}, realms: [...] });
//   r.wsUrl, r.rsPort, r.unixPath, r.logPath, r.proc
//   await r.stop();   // SIGTERM; throws if the router panicked or hung
//
// A realm object may carry nested tables (`auth: {...}` -> [realm.auth], `role: [{...}]`
// -> [[realm.role]], nested further as needed); hashSecret() runs `switchyard hash-secret`.
//
// Binary: $SWITCHYARD_BIN, default <repo>/target/debug/switchyard.

import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..', '..');
const LOG_DIR = process.env.SWITCHYARD_INTEROP_LOGDIR_JS || path.join(HERE, '..', '.logs', 'js');

export const DEFAULT_LIMITS = {
  max_message_size: 1048576,
  outbound_queue: 1024,
  slow_consumer: 'disconnect',
  handshake_timeout: '10s',
  ping_interval: '30s',
  ping_timeout: '10s',
};

export function routerBin() {
  return process.env.SWITCHYARD_BIN || path.join(REPO, 'target', 'debug', 'switchyard');
}

/** A free TCP port on 127.0.0.1 (bind port 0, read it, close). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function tomlValue(v) {
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (typeof v === 'number') return String(v);
  if (typeof v === 'string') return JSON.stringify(v);
  if (Array.isArray(v) && !v.some(isTable)) return `[${v.map(tomlValue).join(', ')}]`;
  throw new Error(`cannot encode ${v} as TOML`);
}

const isTable = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
const isTableArray = (v) => Array.isArray(v) && v.length > 0 && v.every(isTable);

/**
 * `header` and its `key = value` lines. Nested tables follow the plain keys: an object
 * value `k` becomes the sub-table `[name.k]`, a non-empty array of objects one `[[name.k]]`
 * entry each (name: the header without brackets), so a realm
 * `{ name: 'realm1', auth: { methods: ['ticket'], ticket: [{ authid: 'a', ... }] } }`
 * gives `[realm.auth]` and `[[realm.auth.ticket]]` (as routerproc.py renders them).
 */
function tomlTable(header, obj) {
  const name = header.replace(/^\[+|\]+$/g, '');
  const lines = [header];
  const nested = [];
  for (const [k, v] of Object.entries(obj)) {
    if (isTable(v)) nested.push(tomlTable(`[${name}.${k}]`, v));
    else if (isTableArray(v)) nested.push(...v.map((x) => tomlTable(`[[${name}.${k}]]`, x)));
    else lines.push(`${k} = ${tomlValue(v)}`);
  }
  return lines.join('\n') + '\n' + nested.map((t) => '\n' + t).join('');
}

/**
 * `switchyard hash-secret ...args` with `secret` (and a newline) on stdin: what the config
 * stores for a ticket principal (Argon2id) or, with ['--method', 'wampcra', '--salt', S, ...],
 * a salted WAMP-CRA principal. Returns { status, stdout, stderr }.
 */
export function hashSecret(secret, args = []) {
  const r = spawnSync(routerBin(), ['hash-secret', ...args], { input: `${secret}\n`, encoding: 'utf8', timeout: 60000 });
  return { status: r.status, stdout: (r.stdout || '').trim(), stderr: r.stderr || '' };
}

export function renderConfig({ wsPort, rsPort, unixPath, realms, limits, log, tables }) {
  return [
    tomlTable('[log]', { format: 'text', level: 'info', ...(log || {}) }),
    tomlTable('[[listener]]', { type: 'websocket', address: `127.0.0.1:${wsPort}`, path: '/ws' }),
    tomlTable('[[listener]]', { type: 'rawsocket', address: `127.0.0.1:${rsPort}` }),
    tomlTable('[[listener]]', { type: 'rawsocket', unix: unixPath }),
    ...(realms || [{ name: 'realm1', uri_check: 'loose' }]).map((r) => tomlTable('[[realm]]', r)),
    tomlTable('[limits]', { ...DEFAULT_LIMITS, ...(limits || {}) }),
    // Further top-level tables, e.g. { admin: { path: '/admin' } } -> [admin].
    ...Object.entries(tables || {}).map(([k, v]) => tomlTable(`[${k}]`, v)),
  ].join('\n');
}

function canConnect(opts) {
  return new Promise((resolve) => {
    const s = net.connect(opts);
    const done = (ok) => { s.destroy(); resolve(ok); };
    s.setTimeout(200, () => done(false));
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const PANIC_RE = /panicked at|stack backtrace:/i;

export async function startRouter(name, { realms, limits, log, tables, readyTimeoutMs = 10000 } = {}) {
  const bin = routerBin();
  try {
    fs.accessSync(bin, fs.constants.X_OK);
  } catch {
    throw new Error(`router binary not found / not executable: ${bin} (set SWITCHYARD_BIN)`);
  }
  fs.mkdirSync(LOG_DIR, { recursive: true });
  const logPath = path.join(LOG_DIR, `${name.replace(/[^A-Za-z0-9_.-]+/g, '_')}.log`);
  const workdir = fs.mkdtempSync(path.join(os.tmpdir(), 'sy-js-'));
  const unixPath = path.join(workdir, 'rs.sock');
  const wsPort = await freePort();
  let rsPort = await freePort();
  while (rsPort === wsPort) rsPort = await freePort();
  const cfg = renderConfig({ wsPort, rsPort, unixPath, realms, limits, log, tables });
  const configPath = path.join(workdir, 'switchyard.toml');
  fs.writeFileSync(configPath, cfg);
  fs.writeFileSync(logPath, `# switchyard interop (js): ${name}\n` +
    cfg.split('\n').map((l) => `#   ${l}`).join('\n') + '\n');
  const fd = fs.openSync(logPath, 'a');
  const proc = spawn(bin, ['--config', configPath], { stdio: ['ignore', fd, fd], cwd: workdir });
  fs.closeSync(fd);
  let exited = null;
  const exitPromise = new Promise((resolve) => proc.once('exit', (code, signal) => {
    exited = { code, signal };
    resolve(exited);
  }));

  const logText = () => { try { return fs.readFileSync(logPath, 'utf8'); } catch { return ''; } };
  const logTail = (n = 40) => logText().split('\n').slice(-n).join('\n');

  const router = {
    name, proc, configPath, logPath, wsPort, rsPort, unixPath,
    wsUrl: `ws://127.0.0.1:${wsPort}/ws`,
    logText, logTail,
    async stop(timeoutMs = 5000) {
      let hung = false;
      if (exited === null) {
        proc.kill('SIGTERM');
        const t = await Promise.race([exitPromise, sleep(timeoutMs).then(() => 'timeout')]);
        if (t === 'timeout') {
          hung = true;
          proc.kill('SIGKILL');
          await exitPromise;
        }
      }
      fs.rmSync(workdir, { recursive: true, force: true });
      const panics = logText().split('\n').filter((l) => PANIC_RE.test(l));
      const problems = [];
      if (panics.length) problems.push(`router PANICKED:\n  ${panics.slice(0, 20).join('\n  ')}`);
      if (hung) problems.push(`router did not exit within ${timeoutMs} ms after SIGTERM (killed)`);
      if (problems.length) {
        throw new Error(`[${name}] ${problems.join('\n')}\n--- log ${logPath} (tail) ---\n${logTail(60)}`);
      }
      return exited;
    },
  };

  const deadline = Date.now() + readyTimeoutMs;
  const pending = new Map([
    ['websocket', { host: '127.0.0.1', port: wsPort }],
    ['rawsocket-tcp', { host: '127.0.0.1', port: rsPort }],
    ['rawsocket-unix', { path: unixPath }],
  ]);
  while (pending.size) {
    if (exited !== null) {
      fs.rmSync(workdir, { recursive: true, force: true });
      throw new Error(`router exited early (${JSON.stringify(exited)}); log ${logPath}:\n${logTail()}`);
    }
    for (const [k, opts] of [...pending]) {
      if (await canConnect(opts)) pending.delete(k);
    }
    if (!pending.size) break;
    if (Date.now() > deadline) {
      await router.stop().catch(() => {});
      throw new Error(`router listeners ${[...pending.keys()]} not ready within ${readyTimeoutMs} ms; ` +
        `log ${logPath}:\n${logTail()}`);
    }
    await sleep(50);
  }
  return router;
}
