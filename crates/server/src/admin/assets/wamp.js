// A small WAMP v2 client for the admin page: JSON serializer (wamp.2.json)
// over the browser's WebSocket; HELLO with ticket, WAMP-CRA (salted or not,
// through WebCrypto) or anonymous authentication; CALL and SUBSCRIBE.
// Only what the page needs: no registrations, no publishing, no progressive
// results.
'use strict';

const WAMP = (() => {
  const HELLO = 1, WELCOME = 2, ABORT = 3, CHALLENGE = 4, AUTHENTICATE = 5, GOODBYE = 6,
    ERROR = 8, SUBSCRIBE = 32, SUBSCRIBED = 33, UNSUBSCRIBE = 34, UNSUBSCRIBED = 35, EVENT = 36,
    CALL = 48, RESULT = 50;

  /** A WAMP ERROR or ABORT as a JS error: `uri`, `args`, `kwargs`. */
  class WampError extends Error {
    constructor(uri, args, kwargs) {
      const text = Array.isArray(args) && typeof args[0] === 'string' ? args[0]
        : (kwargs && typeof kwargs.message === 'string' ? kwargs.message : '');
      super(text ? `${uri}: ${text}` : uri);
      this.uri = uri;
      this.args = args || [];
      this.kwargs = kwargs || {};
    }
  }

  const enc = new TextEncoder();

  function b64(bytes) {
    let s = '';
    for (const b of new Uint8Array(bytes)) s += String.fromCharCode(b);
    return btoa(s);
  }

  /** The WAMP-CRA signature of `challenge` with `secret` (salted: PBKDF2 first). */
  async function craSign(secret, extra) {
    if (!globalThis.crypto || !crypto.subtle) {
      throw new Error('WAMP-CRA needs WebCrypto, which browsers offer on https:// pages and on localhost only');
    }
    let key = secret;
    if (extra.salt) {
      const base = await crypto.subtle.importKey('raw', enc.encode(secret), 'PBKDF2', false, ['deriveBits']);
      const bits = await crypto.subtle.deriveBits(
        { name: 'PBKDF2', salt: enc.encode(extra.salt), iterations: extra.iterations || 1000, hash: 'SHA-256' },
        base, 8 * (extra.keylen || 32));
      key = b64(bits);
    }
    const hmac = await crypto.subtle.importKey('raw', enc.encode(key), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
    return b64(await crypto.subtle.sign('HMAC', hmac, enc.encode(extra.challenge)));
  }

  /**
   * A WAMP session. `connect({url, realm, authid, secret, authmethod})` resolves to the
   * session once WELCOME arrived (or rejects with the ABORT); `onclose(reason)` is called
   * when the connection ends afterwards.
   */
  class Session {
    constructor(ws, realm) {
      this.ws = ws;
      this.realm = realm;
      this.id = null;
      this.details = {};
      this.nextId = 1;
      this.pending = new Map(); // request id -> {resolve, reject, kind, handler}
      this.handlers = new Map(); // subscription id -> [handler]
      this.onclose = null;
      this.closed = false;
    }

    send(msg) {
      if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
      else throw new Error('the connection to the router is closed');
    }

    request(build, kind, extra) {
      return new Promise((resolve, reject) => {
        if (this.closed) { reject(new Error('the connection to the router is closed')); return; }
        const id = this.nextId++;
        this.pending.set(id, { resolve, reject, kind, ...extra });
        try { this.send(build(id)); } catch (e) { this.pending.delete(id); reject(e); }
      });
    }

    /** Calls `procedure`; resolves to {args, kwargs}. */
    call(procedure, args = [], kwargs = {}) {
      return this.request((id) => [CALL, id, {}, procedure, args, kwargs], 'call');
    }

    /** Subscribes `handler(args, kwargs, details)` to `topic`. */
    async subscribe(topic, handler, options = {}) {
      const sub = await this.request((id) => [SUBSCRIBE, id, options, topic], 'subscribe');
      const list = this.handlers.get(sub) || [];
      list.push(handler);
      this.handlers.set(sub, list);
      return sub;
    }

    close() {
      if (this.closed) return;
      try { this.send([GOODBYE, {}, 'wamp.close.close_realm']); } catch (_) { /* gone */ }
      setTimeout(() => this.ws.close(1000), 200);
    }

    handle(msg) {
      const type = msg[0];
      if (type === RESULT || type === SUBSCRIBED || type === UNSUBSCRIBED) {
        const p = this.pending.get(msg[1]);
        if (!p) return;
        this.pending.delete(msg[1]);
        if (type === RESULT) p.resolve({ args: msg[3] || [], kwargs: msg[4] || {} });
        else p.resolve(msg[2]);
      } else if (type === ERROR) {
        const p = this.pending.get(msg[2]);
        if (!p) return;
        this.pending.delete(msg[2]);
        p.reject(new WampError(msg[4], msg[5], msg[6]));
      } else if (type === EVENT) {
        for (const h of this.handlers.get(msg[1]) || []) {
          try { h(msg[4] || [], msg[5] || {}, msg[3] || {}); } catch (e) { console.error(e); }
        }
      } else if (type === GOODBYE) {
        try { this.send([GOODBYE, {}, 'wamp.close.goodbye_and_out']); } catch (_) { /* gone */ }
        this.ws.close(1000);
      }
    }

    ended(reason) {
      if (this.closed) return;
      this.closed = true;
      for (const p of this.pending.values()) p.reject(new Error(reason));
      this.pending.clear();
      if (this.onclose) this.onclose(reason);
    }
  }

  /** Opens a WebSocket to `url`, logs in, resolves to a Session. */
  function connect({ url, realm, authid, secret, authmethod }) {
    return new Promise((resolve, reject) => {
      let ws;
      try { ws = new WebSocket(url, ['wamp.2.json']); } catch (e) { reject(e); return; }
      const session = new Session(ws, realm);
      let welcomed = false;
      const fail = (e) => { if (!welcomed) { welcomed = true; reject(e); try { ws.close(); } catch (_) { /* */ } } };
      ws.onopen = () => {
        const details = {
          roles: { caller: { features: {} }, subscriber: { features: {} } },
          agent: 'switchyard-admin',
        };
        if (authmethod && authmethod !== 'anonymous') {
          details.authmethods = [authmethod];
          details.authid = authid;
        } else {
          details.authmethods = ['anonymous'];
        }
        ws.send(JSON.stringify([HELLO, realm, details]));
      };
      ws.onmessage = async (ev) => {
        let msg;
        try { msg = JSON.parse(ev.data); } catch (e) { fail(new Error('the router sent malformed JSON')); return; }
        if (!Array.isArray(msg)) return;
        if (welcomed) { session.handle(msg); return; }
        switch (msg[0]) {
          case WELCOME:
            welcomed = true;
            session.id = msg[1];
            session.details = msg[2] || {};
            resolve(session);
            break;
          case ABORT:
            fail(new WampError(msg[2], [msg[1] && msg[1].message].filter(Boolean), msg[1]));
            break;
          case CHALLENGE:
            try {
              if (msg[1] === 'ticket') {
                ws.send(JSON.stringify([AUTHENTICATE, secret, {}]));
              } else if (msg[1] === 'wampcra') {
                ws.send(JSON.stringify([AUTHENTICATE, await craSign(secret, msg[2] || {}), {}]));
              } else {
                fail(new Error(`the router asked for ${msg[1]}, which this page cannot answer`));
              }
            } catch (e) { fail(e); }
            break;
          default:
            fail(new Error(`unexpected message ${msg[0]} before WELCOME`));
        }
      };
      ws.onerror = () => fail(new Error(`cannot connect to ${url}`));
      ws.onclose = (ev) => {
        const why = ev.reason ? `${ev.code} ${ev.reason}` : `code ${ev.code}`;
        fail(new Error(`the router closed the connection (${why})`));
        session.ended(`the connection to the router closed (${why})`);
      };
    });
  }

  return { connect, WampError };
})();
