<?php

declare(strict_types=1);

namespace Switchyard;

/**
 * The request signatures of Switchyard's HTTP side, computed exactly as the router does
 * (crates/server/src/signing/schemes.rs; docs/HTTP-BRIDGE.md "Signing"):
 *
 * - **Crossbar-compatible** (`/publish`, `/call`, and the requests the router sends to HTTP
 *   subscribers and queue HTTP targets): query parameters `key`, `timestamp`
 *   (`YYYY-MM-DDTHH:MM:SS.mmmZ`), `seq`, `nonce` and `signature`, where `signature` is the
 *   URL-safe base64 (padded) of HMAC-SHA256(secret, key . timestamp . seq . nonce . body).
 * - **Bound** (`/queues/{name}/jobs`): the same parameters, the HMAC taken over a canonical
 *   string that also names the method, the path and the `Idempotency-Key` header.
 * - **Destination-scoped** (requests to a URL a client chose, marked `scope=destination`):
 *   the Crossbar scheme with a secret derived for the request's method and path.
 */
final class Signature
{
    /** The first line of a bound request's canonical string. */
    public const CANONICAL_V1 = 'switchyard-bridge-v1';

    /** The current UTC time as the router writes and expects it: YYYY-MM-DDTHH:MM:SS.mmmZ. */
    public static function timestamp(?float $now = null): string
    {
        $now ??= microtime(true);
        $seconds = (int) floor($now);
        $millis = min(999, (int) (($now - $seconds) * 1000));
        return gmdate('Y-m-d\TH:i:s', $seconds) . sprintf('.%03dZ', $millis);
    }

    /** A fresh random nonce (a decimal integer, as the router parses it). */
    public static function nonce(): string
    {
        return (string) random_int(0, 2 ** 53);
    }

    /** The Crossbar-compatible signature of a request. */
    public static function crossbar(string $secret, string $key, string $timestamp, string $seq,
                                    string $nonce, string $body): string
    {
        return self::b64url(hash_hmac('sha256', $key . $timestamp . $seq . $nonce . $body, $secret, true));
    }

    /** The canonical string a bound signature covers (lines joined by "\n", no final newline). */
    public static function canonical(string $method, string $path, string $key, string $timestamp,
                                     string $seq, string $nonce, ?string $idempotencyKey,
                                     string $body): string
    {
        return implode("\n", [self::CANONICAL_V1, $method, $path, $key, $timestamp, $seq, $nonce,
            $idempotencyKey ?? '', hash('sha256', $body)]);
    }

    /** The bound signature of a request to one of the router's own endpoints. */
    public static function bound(string $secret, string $method, string $path, string $key,
                                 string $timestamp, string $seq, string $nonce,
                                 ?string $idempotencyKey, string $body): string
    {
        $canonical = self::canonical($method, $path, $key, $timestamp, $seq, $nonce, $idempotencyKey, $body);
        return self::b64url(hash_hmac('sha256', $canonical, $secret, true));
    }

    /**
     * The secret that signs a request to a destination a client chose (`scope=destination`):
     * URL-safe base64 of HMAC-SHA256(secret, "switchyard-destination\n" . METHOD . " " . path),
     * `path` without the query.
     */
    public static function destinationSecret(string $secret, string $method, string $path): string
    {
        return self::b64url(hash_hmac('sha256', "switchyard-destination\n" . $method . ' ' . $path, $secret, true));
    }

    /**
     * Verifies a request the router sent to this application (an HTTP subscriber's event, a
     * queue HTTP target's job): the signature, the key and the timestamp window.
     *
     * @param array<string, string> $query  the request's query parameters ($_GET)
     * @param string $body                  the raw body (file_get_contents('php://input'))
     * @param string $method                the request method ($_SERVER['REQUEST_METHOD'])
     * @param string $path                  the request path without the query
     * @param string $secret                the secret shared with the router
     * @param string|null $key              the key the router signs with (null: any)
     * @param int $window                   how far (seconds) the timestamp may be from now
     * @param callable(string): bool|null $firstSeen  replay protection: called with the
     *        signature of a request that is otherwise valid; return false when it was seen
     *        before (remember each for 2 x $window, e.g. in APCu or Redis with SET NX EX)
     */
    public static function verify(array $query, string $body, string $method, string $path,
                                  string $secret, ?string $key = null, int $window = 300,
                                  ?callable $firstSeen = null, ?float $now = null): bool
    {
        foreach (['key', 'timestamp', 'seq', 'nonce', 'signature'] as $name) {
            if (!isset($query[$name]) || !is_string($query[$name]) || $query[$name] === '') {
                return false;
            }
        }
        if ($key !== null && !hash_equals($key, $query['key'])) {
            return false;
        }
        foreach (['seq', 'nonce'] as $name) {
            if (!preg_match('/^[0-9]{1,20}$/', $query[$name])) {
                return false;
            }
        }
        $time = self::parseTimestamp($query['timestamp']);
        if ($time === null || abs(($now ?? microtime(true)) - $time) > $window) {
            return false;
        }
        if (($query['scope'] ?? null) === 'destination') {
            $secret = self::destinationSecret($secret, $method, $path);
        }
        $expected = self::crossbar($secret, $query['key'], $query['timestamp'], $query['seq'],
            $query['nonce'], $body);
        if (!hash_equals($expected, $query['signature'])) {
            return false;
        }
        return $firstSeen === null || $firstSeen($query['signature']);
    }

    /**
     * verify() for the request PHP is serving now ($_GET, php://input, $_SERVER).
     *
     * @param callable(string): bool|null $firstSeen  see verify()
     */
    public static function verifyCurrentRequest(string $secret, ?string $key = null, int $window = 300,
                                                ?callable $firstSeen = null): bool
    {
        $path = parse_url($_SERVER['REQUEST_URI'] ?? '/', PHP_URL_PATH);
        return self::verify($_GET, (string) file_get_contents('php://input'),
            $_SERVER['REQUEST_METHOD'] ?? 'POST', is_string($path) ? $path : '/', $secret, $key,
            $window, $firstSeen);
    }

    /** Seconds since the epoch of a YYYY-MM-DDTHH:MM:SS[.fff]Z timestamp, or null. */
    public static function parseTimestamp(string $timestamp): ?float
    {
        if (!preg_match('/^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d{1,9})?Z$/', $timestamp, $m)) {
            return null;
        }
        $t = \DateTimeImmutable::createFromFormat('!Y-m-d\TH:i:s', $m[1], new \DateTimeZone('UTC'));
        if ($t === false || $t->format('Y-m-d\TH:i:s') !== $m[1]) {
            return null;
        }
        return $t->getTimestamp() + (isset($m[2]) ? (float) ('0' . $m[2]) : 0.0);
    }

    /** URL-safe base64 with padding (what the router writes). */
    public static function b64url(string $bytes): string
    {
        return strtr(base64_encode($bytes), '+/', '-_');
    }
}
