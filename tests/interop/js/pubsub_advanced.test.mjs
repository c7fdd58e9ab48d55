// Autobahn|JS (26.x) interop tests for the Advanced Profile PubSub features of the
// Switchyard Broker (issue 4): pattern-based subscriptions (details.topic), subscriber
// black/whitelisting, publisher identification, event retention, the subscription meta
// API and session testaments.
//
// Autobahn|JS passes PUBLISH / SUBSCRIBE options through unchanged, so every option is
// available (exclude, eligible*, disclose_me, retain, match, get_retained); its Event
// carries details.topic, publisher, publisher_authid, publisher_authrole and retained.
//
// "Not delivered" is checked with a marker: a later publication from the same publisher
// that must arrive; what did not arrive before it was not delivered.
//
// Run: node --experimental-websocket --test tests/interop/js/pubsub_advanced.test.mjs   (Node 20)

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { T, TEST_TIMEOUT, connector, disconnect, sleep, uniq as uniqUri, useRouter, withTimeout } from './helpers.mjs';

// unique names without a separator: `${prefix}<12 hex digits>`
const uniq = (prefix) => uniqUri(prefix, '');

const rt = useRouter('js-pubsub-advanced');
/** Connections that also record Autobahn|JS's internal errors (c.internalErrors). */
const connect = connector(() => rt.router.wsUrl, { recordInternalErrors: true });

/** A subscription handler that records { args, kwargs, details } in arrival order. */
function inbox() {
  const events = [];
  let waiters = [];
  const handler = (args, kwargs, details) => {
    events.push({ args, kwargs, details });
    waiters = waiters.filter((w) => !w());
  };
  return {
    events,
    handler,
    get args() { return events.map((e) => e.args); },
    /** Resolves with the first event matching pred. */
    waitFor(pred, what = 'event', ms = T) {
      return withTimeout(new Promise((resolve) => {
        const check = () => {
          const e = events.find(pred);
          if (e) { resolve(e); return true; }
          return false;
        };
        if (!check()) waiters.push(check);
      }), ms, `${what} (got ${JSON.stringify(events.map((e) => e.args))})`);
    },
    /** Waits for marker `tag`; resolves with the args of the events before it. */
    async beforeMarker(tag) {
      const isMarker = (e) => e.args.length === 2 && e.args[0] === 'marker' && e.args[1] === tag;
      await this.waitFor(isMarker, `marker ${tag}`);
      return events.slice(0, events.findIndex(isMarker)).map((e) => e.args);
    },
  };
}

async function subscribe(c, topic, options) {
  const box = inbox();
  const sub = await withTimeout(c.session.subscribe(topic, box.handler, options), T, `subscribe ${topic}`);
  return [box, sub];
}

const ack = (c, topic, args, kwargs, options = {}) =>
  withTimeout(c.session.publish(topic, args, kwargs, { ...options, acknowledge: true }), T, `publish ${topic}`);

const marker = (c, topic, tag) => ack(c, topic, ['marker', tag]);

const metaCall = (c, proc, args, kwargs) => withTimeout(c.session.call(proc, args, kwargs), T, proc);

describe('autobahn-js advanced pubsub', () => {
  test('prefix and wildcard subscriptions carry details.topic; one event per matching subscription',
    TEST_TIMEOUT, async () => {
      const sub = await connect('msgpack');
      const pub = await connect('cbor');
      try {
        const root = uniq('com.example.js.pat');
        const [bp, sp] = await subscribe(sub, `${root}.sensor`, { match: 'prefix' });
        const [bw, sw] = await subscribe(sub, `${root}..temp`, { match: 'wildcard' });
        const [be, se] = await subscribe(sub, `${root}.sensor.temp`);
        assert.equal(new Set([sp.id, sw.id, se.id]).size, 3);
        const p1 = await ack(pub, `${root}.sensor.temp`, [21.5], { unit: 'C' });
        const p2 = await ack(pub, `${root}.sensor-b.temp`, [19]); // prefix is a plain string prefix
        await ack(pub, `${root}.sensor.temp.max`, [99]); // prefix only
        await ack(pub, `${root}.temp`, ['none']); // neither
        await marker(pub, `${root}.sensor.x`, 1);
        assert.deepEqual(await bp.beforeMarker(1), [[21.5], [19], [99]]);
        assert.deepEqual(bp.events.slice(0, 3).map((e) => e.details.topic),
          [`${root}.sensor.temp`, `${root}.sensor-b.temp`, `${root}.sensor.temp.max`]);
        assert.deepEqual(bp.events[0].kwargs, { unit: 'C' });
        await bw.waitFor((e) => e.args[0] === 19, 'wildcard event 2');
        assert.deepEqual(bw.events.map((e) => [e.args, e.details.topic]),
          [[[21.5], `${root}.sensor.temp`], [[19], `${root}.sensor-b.temp`]]);
        await be.waitFor((e) => e.args[0] === 21.5, 'exact event');
        assert.equal(be.events.length, 1);
        // the same publication on all three subscriptions
        assert.deepEqual([bp.events[0].details.publication, bw.events[0].details.publication,
          be.events[0].details.publication], [p1.id, p1.id, p1.id]);
        assert.equal(bw.events[1].details.publication, p2.id);
        for (const e of [...bp.events, ...bw.events, ...be.events]) assert.equal(e.details.retained, false);
      } finally {
        await disconnect(sub, pub);
      }
    });

  test('subscriber black/whitelisting: exclude, eligible, *_authid, *_authrole', TEST_TIMEOUT, async () => {
    const subs = [await connect('json'), await connect('msgpack'), await connect('cbor')];
    const pub = await connect('json');
    try {
      const topic = uniq('com.example.js.bw');
      const boxes = [];
      for (const s of subs) boxes.push((await subscribe(s, topic))[0]);
      const [a, b, c] = subs.map((s) => s.session.id);
      const [aa, ab, ac] = subs.map((s) => s.details.authid);
      assert.equal(new Set([aa, ab, ac]).size, 3, 'authids differ per session');
      const cases = [
        [{ exclude: [a] }, 'bc'],
        [{ eligible: [a, b] }, 'ab'],
        [{ eligible: [a, b, c], exclude: [a] }, 'bc'],
        [{ exclude_authid: [ab] }, 'ac'],
        [{ eligible_authid: [ac] }, 'c'],
        [{ eligible_authrole: ['anonymous'] }, 'abc'],
        [{ exclude_authrole: ['anonymous'] }, ''],
        [{ eligible_authrole: ['admin'] }, ''],
        [{ eligible: [a, b], exclude_authid: [aa], eligible_authrole: ['anonymous'] }, 'b'],
      ];
      for (const [i, [opts]] of cases.entries()) {
        await ack(pub, topic, ['case', i], {}, opts);
        await marker(pub, topic, i);
      }
      const wrong = [];
      for (const [i, [opts, want]] of cases.entries()) {
        let got = '';
        for (const [n, box] of boxes.entries()) {
          const before = await box.beforeMarker(i);
          if (before.some((x) => x[0] === 'case' && x[1] === i)) got += 'abc'[n];
        }
        if (got !== want) wrong.push(`${JSON.stringify(opts)}: delivered to '${got}', expected '${want}'`);
      }
      assert.deepEqual(wrong, []);
    } finally {
      await disconnect(...subs, pub);
    }
  });

  test('publisher identification: disclose_me', TEST_TIMEOUT, async () => {
    const sub = await connect('cbor');
    const pub = await connect('json');
    try {
      const topic = uniq('com.example.js.dm');
      const [box] = await subscribe(sub, topic);
      const p = await ack(pub, topic, ['disclosed'], {}, { disclose_me: true });
      await ack(pub, topic, ['hidden']);
      await marker(pub, topic, 1);
      assert.deepEqual(await box.beforeMarker(1), [['disclosed'], ['hidden']]);
      const d = box.events[0].details;
      assert.deepEqual([d.publication, d.publisher, d.publisher_authid, d.publisher_authrole],
        [p.id, pub.session.id, pub.details.authid, 'anonymous']);
      const h = box.events[1].details;
      assert.deepEqual([h.publisher, h.publisher_authid, h.publisher_authrole], [undefined, undefined, undefined],
        'publisher disclosed without disclose_me');
      // exclude_me: false delivers to the publisher itself
      const [mine] = await subscribe(pub, topic);
      await ack(pub, topic, ['self'], {}, { exclude_me: false, disclose_me: true });
      const e = await mine.waitFor((x) => x.args[0] === 'self', 'own event with exclude_me=false');
      assert.equal(e.details.publisher, pub.session.id);
    } finally {
      await disconnect(sub, pub);
    }
  });

  test('event retention: retain + get_retained (exact and wildcard), eligibility respected', TEST_TIMEOUT,
    async () => {
      const pub = await connect('msgpack');
      const x = await connect('json');
      const y = await connect('cbor');
      try {
        const root = uniq('com.example.js.ret');
        const t = `${root}.room1.status`;
        const p = await ack(pub, t, ['on'], { level: 3 }, { retain: true });
        await ack(pub, t, ['live-only']); // not retained: does not replace it
        await ack(pub, `${root}.room2.status`, ['not-for-x'], {}, { retain: true, exclude_authid: [x.details.authid] });
        const [bx] = await subscribe(x, t, { get_retained: true });
        const [bxw] = await subscribe(x, `${root}..status`, { match: 'wildcard', get_retained: true });
        const [by] = await subscribe(y, `${root}..status`, { match: 'wildcard', get_retained: true });
        const [bplain] = await subscribe(y, t); // no get_retained
        await marker(pub, t, 1);
        assert.deepEqual(await bx.beforeMarker(1), [['on']]);
        const d = bx.events[0].details;
        assert.equal(d.retained, true);
        assert.equal(d.publication, p.id);
        assert.deepEqual(bx.events[0].kwargs, { level: 3 });
        assert.equal(bx.events[1].details.retained, false, 'a live event marked retained');
        assert.deepEqual(await bxw.beforeMarker(1), [['on']], 'x is excluded from the room2 retained event');
        assert.equal(bxw.events[0].details.topic, t);
        const yRetained = await by.beforeMarker(1);
        assert.deepEqual(yRetained.map((a) => a[0]).sort(), ['not-for-x', 'on']);
        for (const e of by.events.slice(0, 2)) {
          assert.equal(e.details.retained, true);
          assert.equal(e.details.topic, `${root}.${e.args[0] === 'on' ? 'room1' : 'room2'}.status`);
        }
        assert.deepEqual(await bplain.beforeMarker(1), [], 'retained event sent without get_retained');
      } finally {
        await disconnect(pub, x, y);
      }
    });

  test('subscription meta API from JS: lookup, match, get, list/count_subscribers', TEST_TIMEOUT, async () => {
    const a = await connect('json');
    const b = await connect('cbor');
    const c = await connect('msgpack');
    try {
      const topic = uniq('com.example.js.meta');
      const [, sa] = await subscribe(a, topic);
      const [, sb] = await subscribe(b, topic);
      const [, sp] = await subscribe(b, topic.slice(0, -4), { match: 'prefix' });
      assert.equal(sa.id, sb.id);
      assert.equal(await metaCall(c, 'wamp.subscription.lookup', [topic]), sa.id);
      assert.equal(await metaCall(c, 'wamp.subscription.lookup', [topic.slice(0, -4), { match: 'prefix' }]), sp.id);
      assert.equal(await metaCall(c, 'wamp.subscription.lookup', [uniq('com.example.js.none')]), null);
      const m = await metaCall(c, 'wamp.subscription.match', [topic]);
      assert.deepEqual([...m].sort(), [sa.id, sp.id].sort());
      assert.equal(await metaCall(c, 'wamp.subscription.count_subscribers', [sa.id]), 2);
      const subscribers = await metaCall(c, 'wamp.subscription.list_subscribers', [sa.id]);
      assert.deepEqual([...subscribers].sort(), [a.session.id, b.session.id].sort());
      const info = await metaCall(c, 'wamp.subscription.get', [sp.id]);
      assert.deepEqual([info.id, info.uri, info.match], [sp.id, topic.slice(0, -4), 'prefix']);
      assert.ok(!Number.isNaN(Date.parse(info.created)), `created ${info.created}`);
      await assert.rejects(metaCall(c, 'wamp.subscription.get', [4503599627370495]), (err) => {
        assert.equal(err.error, 'wamp.error.no_such_subscription');
        return true;
      });
    } finally {
      await disconnect(a, b, c);
    }
  });

  test('subscription meta events from JS: on_create, on_subscribe, on_unsubscribe, on_delete', TEST_TIMEOUT,
    async () => {
      const mon = await connect('json');
      const a = await connect('msgpack');
      try {
        const events = [];
        for (const k of ['on_create', 'on_subscribe', 'on_unsubscribe', 'on_delete']) {
          const closed = mon.closed.then((c) => {
            throw new Error(`the monitor's connection closed while it subscribed to wamp.subscription.${k}: ` +
              `${JSON.stringify(c.reason)}; Autobahn|JS errors: ${JSON.stringify(mon.internalErrors)}`);
          });
          await withTimeout(Promise.race([
            mon.session.subscribe(`wamp.subscription.${k}`, (args) => events.push([k, args])), closed]), T,
          `subscribe wamp.subscription.${k}`);
        }
        assert.ok(mon.session.isOpen, 'the monitor session was closed while subscribing to the meta events');
        const topic = uniq('com.example.js.metaev');
        const [, sub] = await subscribe(a, topic, { match: 'prefix' });
        await withTimeout(sub.unsubscribe(), T, 'unsubscribe');
        const of = () => events.filter(([k, args]) => (k === 'on_create' ? args[1].id : args[1]) === sub.id);
        const deadline = Date.now() + T;
        while (of().length < 4 && Date.now() < deadline) await sleep(10);
        const got = of();
        assert.deepEqual(got.map(([k]) => k), ['on_create', 'on_subscribe', 'on_unsubscribe', 'on_delete'],
          JSON.stringify(events));
        assert.deepEqual(got.map(([, args]) => args[0]), Array(4).fill(a.session.id));
        assert.deepEqual([got[0][1][1].uri, got[0][1][1].match], [topic, 'prefix']);
        assert.ok(mon.session.isOpen, 'the monitor session was closed');
      } finally {
        await disconnect(mon, a);
      }
    });

  test('testament: a JS session\'s testaments are published when it closes', TEST_TIMEOUT, async () => {
    const watcher = await connect('cbor');
    const other = await connect('json');
    const t = await connect('msgpack');
    try {
      const topic = uniq('com.example.js.will');
      const [box] = await subscribe(watcher, topic);
      const r = await metaCall(t, 'wamp.session.add_testament', [topic, ['gone'], { who: 'js' }],
        { publish_options: { disclose_me: true } });
      assert.equal(r, null, 'add_testament returns nothing');
      await metaCall(t, 'wamp.session.add_testament', [topic, ['detached-first'], {}], { scope: 'detached' });
      await metaCall(t, 'wamp.session.add_testament', [topic, ['flushed'], {}], { scope: 'detached' });
      await metaCall(t, 'wamp.session.flush_testaments', [], { scope: 'detached' });
      await metaCall(t, 'wamp.session.add_testament', [topic, ['detached-after-flush'], {}], { scope: 'detached' });
      await assert.rejects(metaCall(t, 'wamp.session.add_testament', [topic, [], {}], { scope: 'later' }),
        (err) => { assert.equal(err.error, 'wamp.error.invalid_argument'); return true; });
      await marker(other, topic, 0);
      assert.deepEqual(await box.beforeMarker(0), [], 'testament published while the session lives');
      const tid = t.session.id;
      const tauth = t.details.authid;
      await disconnect(t);
      await box.waitFor((e) => e.args[0] === 'gone', 'testament');
      await marker(other, topic, 1);
      const got = await box.beforeMarker(1);
      assert.deepEqual(got.slice(1), [['detached-after-flush'], ['gone']]);
      const e = box.events.find((x) => x.args[0] === 'gone');
      assert.deepEqual(e.kwargs, { who: 'js' });
      assert.deepEqual([e.details.publisher, e.details.publisher_authid, e.details.publisher_authrole],
        [tid, tauth, 'anonymous']);
    } finally {
      await disconnect(watcher, other, t);
    }
  });
});
