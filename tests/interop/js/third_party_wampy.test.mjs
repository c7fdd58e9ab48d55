// Interop tests with a third-party WAMP client other than Autobahn: wampy.js (8.x, npm
// `wampy`, pinned in package.json), for the RPC behaviour of issue 13:
//
//  - progressive call results: a wampy.js callee never announces the callee feature
//    progressive_call_results in HELLO, yet sends progressive YIELDs when its caller asked
//    (INVOCATION.Details.receive_progress). The Dealer forwards them to every caller that
//    set CALL.Options.receive_progress (a wampy.js caller, an Autobahn|JS caller), as
//    Crossbar.io does.
//  - call canceling in mode kill: a wampy.js caller cancels a call whose callee (an
//    Autobahn|Python callee in a child process: wampy.js and Autobahn|JS callees do not
//    announce call_canceling, so they never get INTERRUPTs) answers the INTERRUPT with an
//    ERROR (Autobahn|Python: wamp.error.runtime_error or its own URI when the handler is
//    cancelled). The caller gets wamp.error.canceled, with the callee's args riding along.
//
// wampy.js needs a WebSocket class in Node: the global one (Node >= 22, or Node 20 with
// --experimental-websocket, as run.sh runs it) is passed as its `ws` option.
//
// Run: node --experimental-websocket --test tests/interop/js/third_party_wampy.test.mjs   (Node 20)

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Wampy } from 'wampy';
import { startPyCallee } from './pychild.mjs';
import { T, TEST_TIMEOUT, connector, disconnect, uniq, useRouter, withTimeout } from './helpers.mjs';

const rt = useRouter('js-third-party-wampy');

/**
 * Deferreds for Autobahn|JS with notify(), so that progressive results reach
 * `promise.onprogress` (see rpc_advanced.test.mjs).
 */
function progressDeferred() {
  const d = {};
  d.promise = new Promise((resolve, reject) => {
    d.resolve = resolve;
    d.reject = reject;
  });
  d.notify = (v) => {
    if (typeof d.promise.onprogress === 'function') d.promise.onprogress(v);
  };
  return d;
}

const autobahnConnect = connector(() => rt.router.wsUrl, { deferred: progressDeferred });

/** A joined wampy.js session on realm1 (JSON serializer, its default). */
async function wampy() {
  const w = new Wampy(rt.router.wsUrl, {
    realm: 'realm1',
    ws: globalThis.WebSocket,
    autoReconnect: false,
    debug: false,
  });
  await withTimeout(w.connect(), T, 'wampy connect');
  return w;
}

async function wampyClose(...ws) {
  for (const w of ws) {
    try { await withTimeout(w.disconnect(), T, 'wampy disconnect'); } catch { /* gone */ }
  }
}

/**
 * Registers `proc` on a wampy.js callee: it sends `n` progressive results [i, 'wampy']
 * when the INVOCATION asks for them (details.receive_progress) or its second argument is
 * 'always' (a callee that does not look at the details), then the final result.
 * `seen` collects the INVOCATION.Details.
 */
async function progressiveWampyCallee(proc, seen) {
  const callee = await wampy();
  await callee.register(proc, async ({ argsList, details, result_handler: resultHandler }) => {
    seen.push(details);
    const n = argsList[0];
    if (details.receive_progress || argsList[1] === 'always') {
      for (let i = 0; i < n; i++) {
        resultHandler({ argsList: [i, 'wampy'], options: { progress: true } });
      }
    }
    return { argsList: ['final', Boolean(details.receive_progress)] };
  });
  return callee;
}

// The Autobahn|Python callee (startPyCallee, pychild.mjs) announces call_canceling: `block`
// waits until it is interrupted; `block_args` answers the INTERRUPT with its own ERROR URI and args.

/** Starts a wampy.js call to `proc` and returns [promise of its outcome, its request id]. */
function wampyCall(w, proc, args) {
  const p = w.call(proc, args);
  const { reqId } = w.getOpStatus();
  return [p.then((r) => ({ result: r }), (e) => ({ error: e })), reqId];
}

describe('wampy.js (third-party client)', () => {
  test('progressive YIELDs of a wampy.js callee reach a wampy.js caller that asked', TEST_TIMEOUT,
    async () => {
      const proc = uniq('com.example.wampy.progress');
      const seen = [];
      const callee = await progressiveWampyCallee(proc, seen);
      const caller = await wampy();
      try {
        const progress = [];
        const r = await withTimeout(
          caller.call(proc, [3], { progress_callback: (p) => progress.push(p.argsList) }),
          T, 'progressive call');
        assert.deepEqual(r.argsList, ['final', true]);
        assert.equal(seen[0].receive_progress, true, `INVOCATION.Details ${JSON.stringify(seen[0])}`);
        assert.deepEqual(progress, [[0, 'wampy'], [1, 'wampy'], [2, 'wampy']],
          'every progressive result must reach the caller, in order');

        // A caller that does not ask gets only the final result, and the callee is not asked.
        const plain = await withTimeout(caller.call(proc, [3]), T, 'plain call');
        assert.deepEqual(plain.argsList, ['final', false]);
        assert.ok(!seen[1].receive_progress, `INVOCATION.Details ${JSON.stringify(seen[1])}`);

        // A callee that sends progressive YIELDs without looking: forwarded to the caller
        // that asked, dropped for the one that did not.
        const forced = [];
        const f = await withTimeout(
          caller.call(proc, [2, 'always'], { progress_callback: (p) => forced.push(p.argsList) }),
          T, 'progressive call, callee always progressive');
        assert.deepEqual(f.argsList, ['final', true]);
        assert.deepEqual(forced, [[0, 'wampy'], [1, 'wampy']]);
        const g = await withTimeout(caller.call(proc, [2, 'always']), T, 'plain call, callee always progressive');
        assert.deepEqual(g.argsList, ['final', false]);
      } finally {
        await wampyClose(caller, callee);
      }
    });

  test('progressive YIELDs of a wampy.js callee reach an Autobahn|JS caller with receive_progress',
    TEST_TIMEOUT, async () => {
      const proc = uniq('com.example.wampy.progress');
      const seen = [];
      const callee = await progressiveWampyCallee(proc, seen);
      const caller = await autobahnConnect('msgpack');
      try {
        const progress = [];
        const p = caller.session.call(proc, [2], {}, { receive_progress: true });
        p.onprogress = (r) => progress.push(r.args);
        const r = await withTimeout(p, T, 'progressive call');
        assert.deepEqual(r.args, ['final', true]);
        assert.deepEqual(progress, [[0, 'wampy'], [1, 'wampy']]);
      } finally {
        await disconnect(caller);
        await wampyClose(callee);
      }
    });

  test('cancel mode kill: an Autobahn|Python callee answers the INTERRUPT with an ERROR, '
    + 'the wampy.js caller gets wamp.error.canceled', TEST_TIMEOUT, async () => {
    const base = uniq('com.example.wampy.kill');
    const py = await startPyCallee(rt.router.wsUrl, base);
    const caller = await wampy();
    try {
      // The handler is cancelled: Autobahn|Python answers with its own error URI.
      const [outcome, reqId] = wampyCall(caller, `${base}.block`, ['k1']);
      await py.waitLine('INVOKED k1');
      assert.equal(caller.cancel(reqId, { mode: 'kill' }), true);
      const { error, result } = await withTimeout(outcome, T, 'killed call');
      assert.equal(result, undefined, `the call must fail, got ${JSON.stringify(result)}`);
      await py.waitLine('CANCELLED k1'); // the callee got the INTERRUPT and answered it
      assert.equal(error.errorUri, 'wamp.error.canceled', `got ${error.errorUri}: ${JSON.stringify(error.argsList)}`);

      // The handler raises its own ApplicationError: same answer, its args ride along.
      const [outcome2, reqId2] = wampyCall(caller, `${base}.block_args`, ['k2']);
      await py.waitLine('INVOKED k2');
      caller.cancel(reqId2, { mode: 'kill' });
      const second = await withTimeout(outcome2, T, 'killed call with args');
      assert.equal(second.error?.errorUri, 'wamp.error.canceled', JSON.stringify(second.error?.errorUri));
      assert.deepEqual(second.error.argsList, ['stopped by interrupt', 'k2']);
    } finally {
      await wampyClose(caller);
      await py.stop();
    }
  });

  test('cancel mode kill from an Autobahn|JS caller: wamp.error.canceled too', TEST_TIMEOUT, async () => {
    const base = uniq('com.example.wampy.killab');
    const py = await startPyCallee(rt.router.wsUrl, base);
    const caller = await autobahnConnect('json');
    try {
      const p = caller.session.call(`${base}.block`, ['a1']);
      const outcome = p.then(() => 'resolved', (e) => e);
      await py.waitLine('INVOKED a1');
      p.cancel({ mode: 'kill' }); // Autobahn|JS waits for the router's answer in mode kill
      const err = await withTimeout(outcome, T, 'killed call');
      assert.equal(err.error, 'wamp.error.canceled', `got ${JSON.stringify(err)}`);
      await py.waitLine('CANCELLED a1');
    } finally {
      await disconnect(caller);
      await py.stop();
    }
  });
});
