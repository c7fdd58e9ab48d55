#!/usr/bin/env php
<?php
// Publish an event through Switchyard's HTTP bridge with a signed request.
//
// Plain PHP with the curl extension only (no framework, no composer). Usage:
//
//     SWITCHYARD_BRIDGE=http://127.0.0.1:8090 SWITCHYARD_KEY=mykey SWITCHYARD_SECRET=... \
//         php publish.php com.example.topic '["hello", 42]' '{"color": "orange"}'
//
// Prints the router's answer ({"id": <publication id>}) and exits 0, or prints the
// refusal ({"error", "message"}) and exits 1. A bad command line exits 2.

declare(strict_types=1);

/** URL-safe base64 (with padding) of HMAC-SHA256(secret, key . timestamp . seq . nonce . body). */
function sign(string $secret, string $key, string $timestamp, string $seq, string $nonce, string $body): string
{
    $mac = hash_hmac('sha256', $key . $timestamp . $seq . $nonce . $body, $secret, true);
    return strtr(base64_encode($mac), '+/', '-_');
}

/** The current UTC time as YYYY-MM-DDTHH:MM:SS.mmmZ. */
function timestamp(): string
{
    $now = microtime(true);
    $seconds = (int) floor($now);
    $millis = min(999, (int) (($now - $seconds) * 1000));
    return gmdate('Y-m-d\TH:i:s', $seconds) . sprintf('.%03dZ', $millis);
}

/**
 * Publishes one event; returns [HTTP status, decoded answer]. Throws RuntimeException
 * when the bridge cannot be reached or does not answer JSON.
 */
function publish(string $base, string $key, string $secret, string $topic, array $args = [],
                 ?stdClass $kwargs = null, ?stdClass $options = null): array
{
    // stdClass, not array, for the objects: json_encode writes an empty array as [].
    $body = json_encode([
        'topic' => $topic,
        'args' => $args,
        'kwargs' => $kwargs ?? new stdClass(),
        'options' => $options ?? new stdClass(),
    ], JSON_THROW_ON_ERROR | JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_PRESERVE_ZERO_FRACTION);
    $ts = timestamp();
    $seq = '1';
    // seq and nonce are decimal integers (as Crossbar parses them); a signature
    // is accepted once, so each request gets a fresh random nonce.
    $nonce = (string) random_int(0, 2 ** 53);
    $query = http_build_query([
        'key' => $key,
        'timestamp' => $ts,
        'seq' => $seq,
        'nonce' => $nonce,
        'signature' => sign($secret, $key, $ts, $seq, $nonce, $body),
    ], '', '&', PHP_QUERY_RFC3986);

    $ch = curl_init(rtrim($base, '/') . '/publish?' . $query);
    if ($ch === false) {
        throw new RuntimeException('cannot initialise curl');
    }
    curl_setopt_array($ch, [
        CURLOPT_POST => true,
        CURLOPT_POSTFIELDS => $body, // a string: sent as is, the bytes that were signed
        CURLOPT_HTTPHEADER => ['Content-Type: application/json', 'Expect:'],
        CURLOPT_RETURNTRANSFER => true,
        CURLOPT_CONNECTTIMEOUT => 5,
        CURLOPT_TIMEOUT => 10,
    ]);
    $answer = curl_exec($ch);
    if ($answer === false) {
        $error = curl_error($ch);
        curl_close($ch);
        throw new RuntimeException("cannot reach the bridge at $base: $error");
    }
    $status = (int) curl_getinfo($ch, CURLINFO_RESPONSE_CODE);
    curl_close($ch);
    $reply = json_decode((string) $answer, true);
    if (!is_array($reply)) {
        throw new RuntimeException("the bridge answered HTTP $status with something that is not JSON: "
            . substr((string) $answer, 0, 200));
    }
    return [$status, $reply];
}

/** Decodes a command-line JSON argument, exiting 2 with the reason if it is not what is wanted. */
function json_arg(string $name, string $text, bool $want_array)
{
    try {
        $value = json_decode($text, false, 512, JSON_THROW_ON_ERROR);
    } catch (JsonException $e) {
        fwrite(STDERR, "publish.php: $name is not JSON: {$e->getMessage()}\n");
        exit(2);
    }
    if ($want_array ? !is_array($value) : !($value instanceof stdClass)) {
        fwrite(STDERR, "publish.php: $name must be a JSON " . ($want_array ? 'array' : 'object') . "\n");
        exit(2);
    }
    return $value;
}

function env(string $name, ?string $default = null): string
{
    $v = getenv($name);
    if ($v === false || $v === '') {
        if ($default === null) {
            fwrite(STDERR, "publish.php: set $name\n");
            exit(2);
        }
        return $default;
    }
    return $v;
}

if (PHP_SAPI === 'cli' && realpath($argv[0]) === __FILE__) {
    if ($argc < 2) {
        fwrite(STDERR, "usage: publish.php TOPIC [ARGS_JSON] [KWARGS_JSON]\n"
            . "  with SWITCHYARD_BRIDGE (default http://127.0.0.1:8090), SWITCHYARD_KEY, SWITCHYARD_SECRET\n");
        exit(2);
    }
    if (!extension_loaded('curl')) {
        fwrite(STDERR, "publish.php: the PHP curl extension is missing (Debian: apt-get install php-curl)\n");
        exit(2);
    }
    $base = env('SWITCHYARD_BRIDGE', 'http://127.0.0.1:8090');
    $key = env('SWITCHYARD_KEY');
    $secret = env('SWITCHYARD_SECRET');
    $args = $argc > 2 ? json_arg('ARGS_JSON', $argv[2], true) : [];
    $kwargs = $argc > 3 ? json_arg('KWARGS_JSON', $argv[3], false) : null;
    try {
        [$status, $reply] = publish($base, $key, $secret, $argv[1], $args, $kwargs);
    } catch (RuntimeException $e) {
        fwrite(STDERR, 'publish.php: ' . $e->getMessage() . "\n");
        exit(1);
    }
    echo json_encode($reply, JSON_UNESCAPED_SLASHES), "\n";
    exit($status === 200 && isset($reply['id']) ? 0 : 1);
}
