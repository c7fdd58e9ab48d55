// Autobahn|JS (26.x) interop tests for the Switchyard WAMP router.
// Run: node --experimental-websocket --test tests/interop/js/   (Node 20)

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import autobahn from 'autobahn';
import { SERIALIZERS, T, TEST_TIMEOUT, connector, disconnect, uniq, useRouter, withTimeout } from './helpers.mjs';

const rt = useRouter('js-interop');
const connect = connector(() => rt.router.wsUrl);

const ARGS = [1, 'two', { three: [3, 3.5, null, true] }, 'unicode \u2713'];
const KWARGS = { a: 1, b: { c: ['d', { e: false }] }, s: 'x' };

for (const ser of Object.keys(SERIALIZERS)) {
  describe(`autobahn-js ${ser}`, () => {
    test('connect: WELCOME details', TEST_TIMEOUT, async () => {
      const c = await connect(ser);
      try {
        const d = c.details;
        assert.equal(d.transport.protocol, `wamp.2.${ser}`);
        assert.equal(d.roles?.broker?.features?.publisher_exclusion, true, JSON.stringify(d.roles));
        assert.equal(typeof d.roles?.dealer?.features, 'object', JSON.stringify(d.roles));
        assert.equal(d.authrole, 'anonymous');
        assert.equal(d.authmethod, 'anonymous');
        assert.equal(d.authprovider, 'static');
        assert.equal(d.realm, 'realm1');
        assert.ok(typeof d.authid === 'string' && d.authid.length > 0, `authid ${d.authid}`);
        assert.ok(typeof d.agent === 'string' && d.agent.startsWith('switchyard'), `agent ${d.agent}`);
        assert.ok(Number.isInteger(c.session.id) && c.session.id > 0, `session id ${c.session.id}`);
      } finally {
        await disconnect(c);
      }
    });

    test('pubsub with args and kwargs', TEST_TIMEOUT, async () => {
      const sub = await connect(ser);
      const pub = await connect(ser);
      try {
        const topic = uniq('com.example.js.topic');
        let onEvent;
        const got = new Promise((r) => { onEvent = r; });
        await withTimeout(sub.session.subscribe(topic, (args, kwargs) => onEvent({ args, kwargs })), T, 'subscribe');
        const publication = await withTimeout(pub.session.publish(topic, ARGS, KWARGS, { acknowledge: true }), T,
          'acknowledged publish');
        assert.ok(Number.isInteger(publication.id) && publication.id > 0, `publication id ${publication.id}`);
        const ev = await withTimeout(got, T, 'event');
        assert.deepEqual(ev.args, ARGS);
        assert.deepEqual(ev.kwargs, KWARGS);
      } finally {
        await disconnect(sub, pub);
      }
    });

    test('publisher exclusion (default) and exclude_me=false', TEST_TIMEOUT, async () => {
      const me = await connect(ser);
      const other = await connect(ser);
      try {
        const topic = uniq('com.example.js.excl');
        const mine = [];
        const others = [];
        await withTimeout(me.session.subscribe(topic, (args) => mine.push(args[0])), T, 'subscribe me');
        await withTimeout(other.session.subscribe(topic, (args) => others.push(args[0])), T, 'subscribe other');
        await withTimeout(me.session.publish(topic, ['default'], {}, { acknowledge: true }), T, 'publish');
        await withTimeout(me.session.publish(topic, ['include'], {}, { acknowledge: true, exclude_me: false }), T,
          'publish exclude_me=false');
        const deadline = Date.now() + T;
        while ((others.length < 2 || mine.length < 1) && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 20));
        }
        await new Promise((r) => setTimeout(r, 200));
        assert.deepEqual(others, ['default', 'include']);
        assert.deepEqual(mine, ['include'], 'publisher must only get its own event with exclude_me=false');
      } finally {
        await disconnect(me, other);
      }
    });

    test('rpc: result with args/kwargs and error propagation', TEST_TIMEOUT, async () => {
      const callee = await connect(ser);
      const caller = await connect(ser);
      try {
        const proc = uniq('com.example.js.proc');
        const seen = [];
        await withTimeout(callee.session.register(proc, (args, kwargs) => {
          seen.push({ args, kwargs });
          return new autobahn.Result([...args, 'extra'], { ...kwargs, echoed: true });
        }), T, 'register');
        await withTimeout(callee.session.register(`${proc}.fail`, () => {
          throw new autobahn.Error('com.example.error.foo', [1, 2], { x: 3 });
        }), T, 'register fail');
        await withTimeout(callee.session.register(`${proc}.single`, (args) => args[0] * 2), T, 'register single');

        const res = await withTimeout(caller.session.call(proc, ARGS, KWARGS), T, 'call');
        assert.deepEqual(seen[0], { args: ARGS, kwargs: KWARGS });
        assert.ok(res instanceof autobahn.Result, `expected autobahn.Result, got ${JSON.stringify(res)}`);
        assert.deepEqual(res.args, [...ARGS, 'extra']);
        assert.deepEqual(res.kwargs, { ...KWARGS, echoed: true });

        assert.equal(await withTimeout(caller.session.call(`${proc}.single`, [21]), T, 'call single'), 42);

        await assert.rejects(withTimeout(caller.session.call(`${proc}.fail`, ['x']), T, 'call fail'), (err) => {
          assert.ok(err instanceof autobahn.Error, `expected autobahn.Error, got ${err}`);
          assert.equal(err.error, 'com.example.error.foo');
          assert.deepEqual(err.args, [1, 2]);
          assert.deepEqual(err.kwargs, { x: 3 });
          return true;
        });
      } finally {
        await disconnect(callee, caller);
      }
    });

    test('call to an unregistered procedure -> wamp.error.no_such_procedure', TEST_TIMEOUT, async () => {
      const caller = await connect(ser);
      try {
        await assert.rejects(withTimeout(caller.session.call(uniq('com.example.js.nope')), T, 'call'), (err) => {
          assert.equal(err.error, 'wamp.error.no_such_procedure', `got ${JSON.stringify(err)}`);
          assert.ok(typeof err.args[0] === 'string' && err.args[0].length > 0,
            `router ERROR should carry a message as args[0]: ${JSON.stringify(err.args)}`);
          return true;
        });
        assert.ok(caller.session.isOpen, 'session closed after an error');
      } finally {
        await disconnect(caller);
      }
    });

    test('unknown realm -> ABORT wamp.error.no_such_realm', TEST_TIMEOUT, async () => {
      await assert.rejects(connect(ser, 'no.such.realm'), (err) => {
        assert.equal(err.details?.reason, 'wamp.error.no_such_realm', `got ${err.message}`);
        assert.ok(err.details.message, 'ABORT should carry Details.message');
        return true;
      });
    });
  });
}

describe('autobahn-js cross-serializer', () => {
  for (const [from, to] of [['json', 'msgpack'], ['msgpack', 'cbor'], ['cbor', 'json']]) {
    test(`pubsub + rpc ${from} -> ${to}`, TEST_TIMEOUT, async () => {
      const a = await connect(from);
      const b = await connect(to);
      try {
        const topic = uniq('com.example.js.cross');
        let onEvent;
        const got = new Promise((r) => { onEvent = r; });
        await withTimeout(b.session.subscribe(topic, (args, kwargs) => onEvent({ args, kwargs })), T, 'subscribe');
        await withTimeout(a.session.publish(topic, ARGS, KWARGS, { acknowledge: true }), T, 'publish');
        assert.deepEqual(await withTimeout(got, T, 'event'), { args: ARGS, kwargs: KWARGS });

        const proc = uniq('com.example.js.crossproc');
        await withTimeout(b.session.register(proc, (args, kwargs) => new autobahn.Result(args, kwargs)), T, 'register');
        const res = await withTimeout(a.session.call(proc, ARGS, KWARGS), T, 'call');
        assert.deepEqual(res.args, ARGS);
        assert.deepEqual(res.kwargs, KWARGS);
      } finally {
        await disconnect(a, b);
      }
    });
  }
});
