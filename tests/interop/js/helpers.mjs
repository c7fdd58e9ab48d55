// Shared helpers of the Autobahn|JS interop tests (*.test.mjs). Not a test file itself:
// node's test runner runs every *.test.mjs in this folder, so this one must not end so.
//
//   const rt = useRouter('js-name');              // a router for this file's tests
//   const connect = connector(() => rt.router.wsUrl);
//   const c = await connect('msgpack');           // { conn, session, details, closed }
//   ...
//   await disconnect(c);

import { after, before } from 'node:test';
import { randomUUID } from 'node:crypto';
import autobahn from 'autobahn';
import { startRouter } from './router.mjs';

export const T = 5000; // per-step timeout (ms)
export const TEST_TIMEOUT = { timeout: 20000 };

if (typeof globalThis.WebSocket !== 'function') {
  throw new Error('no global WebSocket: run node with --experimental-websocket (Node 20) or use Node >= 22');
}

export const SERIALIZERS = {
  json: () => new autobahn.serializer.JSONSerializer(),
  msgpack: () => new autobahn.serializer.MsgpackSerializer(),
  cbor: () => new autobahn.serializer.CBORSerializer(),
};

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    Promise.resolve(promise).finally(() => clearTimeout(timer)),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timeout after ${ms} ms: ${what}`)), ms);
    }),
  ]);
}

/** `${prefix}${sep}` and 12 random hex digits: a URI no other test uses. */
export const uniq = (prefix, sep = '.') => `${prefix}${sep}${randomUUID().replace(/-/g, '').slice(0, 12)}`;

/**
 * Starts a router (startRouter(name, options)) before this file's tests and stops it
 * after them. Returns a handle whose `router` is set once it runs.
 */
export function useRouter(name, options) {
  const handle = { router: null };
  before(async () => {
    handle.router = await startRouter(name, options);
  });
  after(async () => {
    if (handle.router) await handle.router.stop();
  });
  return handle;
}

/**
 * Returns connect(serializer = 'json', realm = 'realm1', connOptions = {}): opens an
 * Autobahn|JS connection to url() and resolves { conn, session, details, closed } once joined
 * (closed: a promise for {reason, details} when the connection closes). Rejects with
 * .reason/.details if the connection closes before join (details.reason / details.message:
 * the ABORT's). connOptions go to autobahn.Connection as they are, e.g.
 * { authmethods: ['ticket'], authid: 'alice', onchallenge: (session, method, extra) => ticket }.
 *
 * Options:
 *   deferred              a deferred factory for Autobahn|JS (its use_deferred) instead of
 *                         ES6 promises
 *   recordInternalErrors  resolve with `internalErrors` too: what Autobahn|JS reports
 *                         through on_internal_error (e.g. the protocol violations it fails
 *                         the transport for)
 */
export function connector(url, { deferred, recordInternalErrors = false } = {}) {
  return (serializer = 'json', realm = 'realm1', connOptions = {}) => new Promise((resolve, reject) => {
    const extra = {};
    const options = {
      url: url(),
      realm,
      serializers: [SERIALIZERS[serializer]()],
      max_retries: 0,
      retry_if_unreachable: false,
      ...(deferred ? { use_deferred: deferred } : { use_es6_promises: true }),
      ...connOptions,
    };
    if (recordInternalErrors) {
      const internalErrors = [];
      extra.internalErrors = internalErrors;
      // Autobahn|JS 26 reports a protocol violation with an undefined error (its session.js
      // shadows Error), so record where it came from
      options.on_internal_error = (e, msg) => {
        const stack = new Error().stack.split('\n');
        const where = stack.find((l) => /_process_[A-Z]/.test(l)) || stack.find((l) => /_protocol_violation/.test(l));
        internalErrors.push(e ? `${msg || ''}${e}` : `protocol violation ${(where || 'unknown').trim()}`);
      };
    }
    const conn = new autobahn.Connection(options);
    let opened = false;
    let resolveClosed;
    const closed = new Promise((r) => { resolveClosed = r; });
    const timer = setTimeout(() => {
      reject(new Error(`connect(${serializer}, ${realm}): not joined within ${T} ms`));
      try { conn.close(); } catch { /* ignore */ }
    }, T);
    conn.onopen = (session, details) => {
      opened = true;
      clearTimeout(timer);
      resolve({ conn, session, details, closed, ...extra });
    };
    conn.onclose = (reason, details) => {
      clearTimeout(timer);
      resolveClosed({ reason, details });
      if (!opened) {
        const err = new Error(`connection closed before join: ${reason} ${details.reason} ${details.message}`);
        err.reason = reason;
        err.details = details;
        reject(err);
      }
      return true; // never retry
    };
    conn.open();
  });
}

/** Closes the connections (null/undefined skipped) and waits for them to close. */
export async function disconnect(...clients) {
  await Promise.all(clients.filter(Boolean).map(async (c) => {
    try { c.conn.close(); } catch { /* already closed */ }
    await withTimeout(c.closed, T, 'connection close').catch(() => {});
  }));
}
