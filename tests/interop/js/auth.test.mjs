// Autobahn|JS (26.x) interop tests for authentication (issue 5): ticket and WAMP-CRA
// (salted and plain), success and failure, through Autobahn|JS's own onchallenge flow
// (autobahn.auth_cra.derive_key / sign for WAMP-CRA).
// Run: node --experimental-websocket --test tests/interop/js/auth.test.mjs   (Node 20)

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import autobahn from 'autobahn';
import { TEST_TIMEOUT, T, connector, disconnect, uniq, useRouter, withTimeout } from './helpers.mjs';
import { hashSecret } from './router.mjs';

const TAG = randomUUID().replace(/-/g, '').slice(0, 12);
const ALICE_TICKET = `alice-ticket-${TAG}`;
const PETER_PASSWORD = `peter-password-${TAG}`;
const PETER_SALT = `salt-${TAG.slice(0, 6)}`;
const PETER_ITERATIONS = 100;
const PETER_KEYLEN = 32;
const PAUL_SECRET = `paul-secret-${TAG}`;

function hashed(secret, args) {
  const r = hashSecret(secret, args);
  if (r.status !== 0) throw new Error(`switchyard hash-secret ${args || ''} failed: ${r.stderr}`);
  return r.stdout;
}

const rt = useRouter('js-auth', {
  realms: [{
    name: 'realm1',
    uri_check: 'loose',
    auth: {
      methods: ['ticket', 'wampcra'],
      max_failures: 1000,
      ticket: [{ authid: 'alice', secret: hashed(ALICE_TICKET), role: 'user' }],
      wampcra: [
        {
          authid: 'peter',
          secret: hashed(PETER_PASSWORD, ['--method', 'wampcra', '--salt', PETER_SALT,
            '--iterations', String(PETER_ITERATIONS), '--keylen', String(PETER_KEYLEN)]),
          salt: PETER_SALT,
          iterations: PETER_ITERATIONS,
          keylen: PETER_KEYLEN,
          role: 'user',
        },
        { authid: 'paul', secret: PAUL_SECRET, role: 'staff' },
      ],
    },
  }],
});
const connect = connector(() => rt.router.wsUrl);

/** Ticket login options; `seen` collects the (method, extra) of each CHALLENGE. */
function ticketLogin(authid, ticket, seen = []) {
  return {
    authmethods: ['ticket'],
    authid,
    onchallenge: (session, method, extra) => {
      seen.push({ method, extra });
      return ticket;
    },
  };
}

/** WAMP-CRA as Autobahn|JS documents it: derive_key when the challenge has a salt, then sign. */
function craLogin(authid, secret, seen = []) {
  return {
    authmethods: ['wampcra'],
    authid,
    onchallenge: (session, method, extra) => {
      seen.push({ method, extra });
      assert.equal(method, 'wampcra');
      const key = extra.salt
        ? autobahn.auth_cra.derive_key(secret, extra.salt, extra.iterations, extra.keylen)
        : secret;
      return autobahn.auth_cra.sign(key, extra.challenge);
    },
  };
}

/** A join that must be refused: resolves to the ABORT's { reason, message }. */
async function refused(serializer, options) {
  try {
    const c = await connect(serializer, 'realm1', options);
    await disconnect(c);
  } catch (e) {
    assert.ok(e.details, `expected a refused join, got ${e}`);
    return { reason: e.details.reason, message: e.details.message };
  }
  throw new Error('the join must be refused');
}

function identity(details) {
  const { authid, authrole, authmethod, authprovider } = details;
  return { authid, authrole, authmethod, authprovider };
}

describe('autobahn-js ticket', () => {
  for (const ser of ['json', 'msgpack']) {
    test(`ticket login (${ser})`, TEST_TIMEOUT, async () => {
      const seen = [];
      const c = await connect(ser, 'realm1', ticketLogin('alice', ALICE_TICKET, seen));
      try {
        assert.deepEqual(identity(c.details), { authid: 'alice', authrole: 'user', authmethod: 'ticket',
          authprovider: 'static' });
        assert.deepEqual(seen.map((s) => s.method), ['ticket']);
        // the session works
        const proc = uniq('com.example.js.auth');
        await withTimeout(c.session.register(proc, () => 'pong'), T, 'register');
        assert.equal(await withTimeout(c.session.call(proc), T, 'call'), 'pong');
      } finally {
        await disconnect(c);
      }
    });
  }

  test('wrong ticket and unknown authid: authentication_failed', TEST_TIMEOUT, async () => {
    const [wrong, unknown] = await Promise.all([
      refused('json', ticketLogin('alice', 'not the ticket')),
      refused('msgpack', ticketLogin('mallory', ALICE_TICKET)),
    ]);
    for (const r of [wrong, unknown]) {
      assert.deepEqual(r, { reason: 'wamp.error.authentication_failed', message: 'authentication failed' });
    }
  });

  test('anonymous is not accepted: no_matching_auth_method', TEST_TIMEOUT, async () => {
    const r = await refused('json', {});
    assert.equal(r.reason, 'wamp.error.no_matching_auth_method');
    assert.ok(r.message.includes('ticket') && r.message.includes('wampcra'), r.message);
  });
});

describe('autobahn-js wampcra', () => {
  for (const ser of ['json', 'cbor']) {
    test(`salted secret (${ser})`, TEST_TIMEOUT, async () => {
      const seen = [];
      const c = await connect(ser, 'realm1', craLogin('peter', PETER_PASSWORD, seen));
      try {
        assert.deepEqual(identity(c.details), { authid: 'peter', authrole: 'user', authmethod: 'wampcra',
          authprovider: 'static' });
        assert.equal(seen.length, 1);
        const { extra } = seen[0];
        assert.equal(extra.salt, PETER_SALT);
        assert.equal(extra.iterations, PETER_ITERATIONS);
        assert.equal(extra.keylen, PETER_KEYLEN);
        const challenge = JSON.parse(extra.challenge);
        assert.equal(challenge.authid, 'peter');
        assert.equal(challenge.authmethod, 'wampcra');
        assert.equal(challenge.session, c.session.id, 'the challenge names the session id WELCOME gives');
      } finally {
        await disconnect(c);
      }
    });
  }

  test('plain secret', TEST_TIMEOUT, async () => {
    const seen = [];
    const c = await connect('msgpack', 'realm1', craLogin('paul', PAUL_SECRET, seen));
    try {
      assert.deepEqual(identity(c.details), { authid: 'paul', authrole: 'staff', authmethod: 'wampcra',
        authprovider: 'static' });
      assert.equal(seen[0].extra.salt, undefined);
    } finally {
      await disconnect(c);
    }
  });

  test('wrong secret, unknown authid: authentication_failed', TEST_TIMEOUT, async () => {
    const results = await Promise.all([
      refused('json', craLogin('peter', 'wrong password')),
      refused('json', craLogin('paul', 'wrong secret')),
      refused('cbor', craLogin('nobody', PAUL_SECRET)),
    ]);
    for (const r of results) {
      assert.deepEqual(r, { reason: 'wamp.error.authentication_failed', message: 'authentication failed' });
    }
  });

  test('the router logged no secret', TEST_TIMEOUT, async () => {
    const log = rt.router.logText().split('\n').filter((l) => !l.startsWith('#'));
    assert.ok(log.some((l) => l.includes('authentication failed') && l.includes('mallory')),
      'a failed login should be logged with its authid');
    for (const secret of [ALICE_TICKET, PETER_PASSWORD, PAUL_SECRET]) {
      assert.ok(!log.some((l) => l.includes(secret)), `a secret is in the router log ${rt.router.logPath}`);
    }
  });
});
