<?php

declare(strict_types=1);

namespace Switchyard\Tests;

use PHPUnit\Framework\TestCase;
use Switchyard\Signature;

/**
 * The signatures against values computed elsewhere: the router's own test vector
 * (crates/server/src/signing/schemes.rs) and Python's examples/bridge/push.py.
 */
final class SignatureTest extends TestCase
{
    private const TS = '2026-01-01T00:00:00.000Z';

    public function testCrossbarVectorOfTheRouter(): void
    {
        $body = '{"topic": "com.test.messages", "args": [1]}';
        $this->assertSame('8_Vuubsz7MxDaeZjM1fHfwwoT0dn1-LVHx9oPAnbXa8=',
            Signature::crossbar('foobar', 'bazapp', self::TS, '1', '12345', $body));
    }

    public function testBoundSignatureAsPythonComputesIt(): void
    {
        $this->assertSame('63-eH9THs0ATik4qNjXk1SqZ4xiqMXbAm6750m1M4iU=',
            Signature::bound('foobar', 'POST', '/queues/pdf/jobs', 'bazapp', self::TS, '1', '12345',
                'order-42', '{"args":[42]}'));
        $this->assertSame('akanE_O2Hrn7IMFlkmzlOYB6Ov0Nkg1C3lfsn7grDo8=',
            Signature::bound('foobar', 'GET', '/queues/pdf/jobs/17', 'bazapp', self::TS, '1', '12345',
                null, ''));
    }

    public function testDestinationSecret(): void
    {
        $this->assertSame('kDoyvY8gzy8DhYqanHAQ2Y-kCOjIuN-zEe6WRjl9fSU=',
            Signature::destinationSecret('secret', 'POST', '/hook'));
    }

    /** @return array<string, string> */
    private static function signed(string $body, float $now, string $secret = 's3cret', string $key = 'switchyard'): array
    {
        $ts = Signature::timestamp($now);
        return ['key' => $key, 'timestamp' => $ts, 'seq' => '1', 'nonce' => '99',
            'signature' => Signature::crossbar($secret, $key, $ts, '1', '99', $body)];
    }

    public function testVerifyAcceptsOnlyTheSignedRequest(): void
    {
        $now = 1_800_000_000.0;
        $q = self::signed('{"a":1}', $now);
        $this->assertTrue(Signature::verify($q, '{"a":1}', 'POST', '/events', 's3cret', 'switchyard', 300, null, $now));
        // another body, another secret, another key, a missing parameter
        $this->assertFalse(Signature::verify($q, '{"a":2}', 'POST', '/events', 's3cret', 'switchyard', 300, null, $now));
        $this->assertFalse(Signature::verify($q, '{"a":1}', 'POST', '/events', 'other', 'switchyard', 300, null, $now));
        $this->assertFalse(Signature::verify($q, '{"a":1}', 'POST', '/events', 's3cret', 'router', 300, null, $now));
        $partial = $q;
        unset($partial['nonce']);
        $this->assertFalse(Signature::verify($partial, '{"a":1}', 'POST', '/events', 's3cret', null, 300, null, $now));
        // outside the window, either way
        $this->assertFalse(Signature::verify($q, '{"a":1}', 'POST', '/events', 's3cret', null, 300, null, $now + 301));
        $this->assertFalse(Signature::verify($q, '{"a":1}', 'POST', '/events', 's3cret', null, 300, null, $now - 301));
        // a counter that is not a decimal integer
        $bad = $q;
        $bad['seq'] = '1e3';
        $this->assertFalse(Signature::verify($bad, '{"a":1}', 'POST', '/events', 's3cret', null, 300, null, $now));
    }

    public function testVerifyRejectsAReplayWhenAskedToRemember(): void
    {
        $now = 1_800_000_000.0;
        $q = self::signed('{}', $now);
        $seen = [];
        $first = static function (string $sig) use (&$seen): bool {
            if (isset($seen[$sig])) {
                return false;
            }
            $seen[$sig] = true;
            return true;
        };
        $this->assertTrue(Signature::verify($q, '{}', 'POST', '/events', 's3cret', null, 300, $first, $now));
        $this->assertFalse(Signature::verify($q, '{}', 'POST', '/events', 's3cret', null, 300, $first, $now));
    }

    public function testADestinationScopedRequestVerifiesOnlyAtItsPath(): void
    {
        $now = 1_800_000_000.0;
        $derived = Signature::destinationSecret('s3cret', 'POST', '/hook');
        $q = self::signed('{}', $now, $derived) + ['scope' => 'destination'];
        $this->assertTrue(Signature::verify($q, '{}', 'POST', '/hook', 's3cret', null, 300, null, $now));
        $this->assertFalse(Signature::verify($q, '{}', 'POST', '/other', 's3cret', null, 300, null, $now));
        // the same signature without the scope marker: checked with the plain secret, refused
        unset($q['scope']);
        $this->assertFalse(Signature::verify($q, '{}', 'POST', '/hook', 's3cret', null, 300, null, $now));
    }

    public function testTimestamps(): void
    {
        $this->assertSame('2027-01-15T08:00:00.250Z', Signature::timestamp(1_800_000_000.25));
        $this->assertSame(1_800_000_000.25, Signature::parseTimestamp('2027-01-15T08:00:00.250Z'));
        $this->assertNull(Signature::parseTimestamp('2027-01-15 08:00:00Z'));
        $this->assertNull(Signature::parseTimestamp('2027-02-30T08:00:00Z'));
    }
}
