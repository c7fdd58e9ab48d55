// A minimal WAMP v2 client (JSON over Node's global WebSocket) for the
// browser tests' other sessions: a client that joins and leaves, a producer,
// a failing worker. Ticket or anonymous authentication; CALL, REGISTER,
// SUBSCRIBE. Node 20 needs --experimental-websocket (run.sh passes it).

const HELLO = 1, WELCOME = 2, ABORT = 3, CHALLENGE = 4, AUTHENTICATE = 5, GOODBYE = 6, ERROR = 8,
  SUBSCRIBE = 32, SUBSCRIBED = 33, CALL = 48, RESULT = 50, REGISTER = 64, REGISTERED = 65,
  INVOCATION = 68, YIELD = 70;

export class WampError extends Error {
  constructor(uri, args) {
    super(`${uri}${args && args[0] ? `: ${args[0]}` : ''}`);
    this.uri = uri;
  }
}

/** Joins `realm` at `url`; resolves to a client once WELCOME arrived. */
export function connect(url, realm, { authid, ticket } = {}) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, ['wamp.2.json']);
    const pending = new Map();
    const procedures = new Map();
    let next = 1;
    let closedResolve;
    const closed = new Promise((r) => { closedResolve = r; });
    const send = (m) => ws.send(JSON.stringify(m));
    const request = (build, handler) => new Promise((res, rej) => {
      const id = next++;
      pending.set(id, { res, rej, handler });
      send(build(id));
    });
    const client = {
      id: null,
      details: {},
      closed,
      call: (procedure, args = [], kwargs = {}) =>
        request((id) => [CALL, id, {}, procedure, args, kwargs]),
      /** `handler(args, kwargs)` returns [args, kwargs], or throws {uri, args}. */
      register: (procedure, handler) =>
        request((id) => [REGISTER, id, {}, procedure], handler),
      subscribe: (topic) => request((id) => [SUBSCRIBE, id, {}, topic]),
      leave() {
        if (ws.readyState === WebSocket.OPEN) send([GOODBYE, {}, 'wamp.close.close_realm']);
        return Promise.race([closed, new Promise((r) => setTimeout(r, 2000))])
          .finally(() => ws.close());
      },
    };
    ws.onopen = () => send([HELLO, realm, {
      roles: { caller: {}, callee: {}, subscriber: {}, publisher: {} },
      authmethods: authid ? ['ticket'] : ['anonymous'],
      ...(authid ? { authid } : {}),
    }]);
    ws.onmessage = async (ev) => {
      const m = JSON.parse(ev.data);
      switch (m[0]) {
        case WELCOME: client.id = m[1]; client.details = m[2]; resolve(client); break;
        case ABORT: reject(new WampError(m[2], [m[1] && m[1].message])); break;
        case CHALLENGE: send([AUTHENTICATE, ticket, {}]); break;
        case GOODBYE: if (m[2] !== 'wamp.close.goodbye_and_out') send([GOODBYE, {}, 'wamp.close.goodbye_and_out']); ws.close(); break;
        case RESULT: case REGISTERED: case SUBSCRIBED: {
          const p = pending.get(m[1]);
          pending.delete(m[1]);
          // Set at once: an INVOCATION may be handled in the same task.
          if (p && m[0] === REGISTERED) procedures.set(m[2], p.handler);
          if (p) p.res(m[0] === RESULT ? { args: m[3] || [], kwargs: m[4] || {} } : m[2]);
          break;
        }
        case ERROR: {
          const p = pending.get(m[2]);
          pending.delete(m[2]);
          if (p) p.rej(new WampError(m[4], m[5]));
          break;
        }
        case INVOCATION: {
          const handler = procedures.get(m[2]);
          try {
            const [args, kwargs] = await handler(m[4] || [], m[5] || {});
            send([YIELD, m[1], {}, args || [], kwargs || {}]);
          } catch (e) {
            send([ERROR, INVOCATION, m[1], {}, e.uri || 'com.test.error', e.args || [String(e.message || e)]]);
          }
          break;
        }
        default: break;
      }
    };
    ws.onerror = () => reject(new Error(`cannot connect to ${url}`));
    ws.onclose = (ev) => {
      for (const p of pending.values()) p.rej(new Error('closed'));
      pending.clear();
      closedResolve({ code: ev.code, reason: ev.reason });
      reject(new Error(`closed before WELCOME (${ev.code})`));
    };
  });
}
