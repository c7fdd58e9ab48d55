<?php

declare(strict_types=1);

namespace Switchyard;

use Switchyard\Exception\CallError;
use Switchyard\Exception\RefusedException;
use Switchyard\Exception\TransportException;

/**
 * Publishes events, calls procedures and pushes jobs through a Switchyard HTTP bridge
 * (`[[bridge]]` in the router's config) with signed requests: what a PHP application behind
 * Apache or FPM does instead of holding a WebSocket.
 *
 *     $switchyard = new Client('http://127.0.0.1:8090', 'shop', getenv('SWITCHYARD_SECRET'));
 *     $switchyard->publish('com.shop.user.' . $userId . '.notifications', ['Your order shipped']);
 *     $price = $switchyard->call('com.shop.price', [4711])->value();
 *     $job = $switchyard->push('pdf', ['args' => [4711]], idempotencyKey: 'invoice-4711');
 *
 * Each request is signed with the key's secret (the router checks it, and remembers each
 * signature so a captured request cannot be replayed); the key's role in the realm decides
 * what it may do. Errors: {@see TransportException} (router unreachable, retrying may help),
 * {@see RefusedException} (the router refused: signature, authorization, bad input, full
 * queue), {@see CallError} (a call answered with a WAMP error).
 */
final class Client
{
    private string $base;

    /**
     * @param array{timeout?: int, connect_timeout?: int, ca_file?: string} $options
     *        timeout: seconds for a whole request (default 30; a call's own timeout option
     *        should be shorter); connect_timeout: seconds (default 5); ca_file: a PEM bundle
     *        to trust for an https:// bridge (default: the system's)
     */
    public function __construct(string $baseUrl, private string $key, private string $secret,
                                private array $options = [])
    {
        if (!preg_match('#^https?://#', $baseUrl)) {
            throw new \InvalidArgumentException("the bridge URL must start with http:// or https:// (got \"$baseUrl\")");
        }
        if (!extension_loaded('curl')) {
            throw new \LogicException('Switchyard\Client needs the curl extension (Debian: apt-get install php-curl)');
        }
        $this->base = rtrim($baseUrl, '/');
    }

    /**
     * Publishes an event; returns its publication id once it is queued to every subscriber.
     *
     * @param list<mixed> $args
     * @param array<string, mixed> $kwargs
     * @param array<string, mixed> $options  PubSub options: exclude_authid, eligible_authid,
     *        eligible_authrole, retain, disclose_me, ... (docs/HTTP-BRIDGE.md)
     */
    public function publish(string $topic, array $args = [], array $kwargs = [], array $options = []): int
    {
        $body = self::json(['topic' => $topic, 'args' => $args, 'kwargs' => (object) $kwargs,
            'options' => (object) $options]);
        [$status, $reply] = $this->send('POST', '/publish', $this->crossbarQuery($body), $body);
        if ($status !== 200 || !isset($reply['id'])) {
            throw self::refused($status, $reply);
        }
        return (int) $reply['id'];
    }

    /**
     * Calls a procedure and returns its result; throws {@see CallError} when it answers with
     * a WAMP error (an application error of the callee, or the router's: no_such_procedure,
     * timeout, not_authorized, ...).
     *
     * @param list<mixed> $args
     * @param array<string, mixed> $kwargs
     * @param array<string, mixed> $options  e.g. ['timeout' => 5000] (milliseconds)
     */
    public function call(string $procedure, array $args = [], array $kwargs = [], array $options = []): CallResult
    {
        $body = self::json(['procedure' => $procedure, 'args' => $args, 'kwargs' => (object) $kwargs,
            'options' => (object) $options]);
        [$status, $reply] = $this->send('POST', '/call', $this->crossbarQuery($body), $body);
        // A WAMP error comes as {"error": uri, "args", "kwargs"} (200, or a status with
        // the bridge's error_status = true); a refusal as {"error", "message"}.
        if (isset($reply['error']) && (array_key_exists('args', $reply) || array_key_exists('kwargs', $reply))) {
            throw new CallError((string) $reply['error'], self::listOf($reply['args'] ?? []),
                self::mapOf($reply['kwargs'] ?? []));
        }
        if ($status !== 200 || isset($reply['error'])) {
            throw self::refused($status, $reply);
        }
        return new CallResult(self::listOf($reply['args'] ?? []), self::mapOf($reply['kwargs'] ?? []));
    }

    /**
     * Pushes a job into a durable queue; returns once the job is stored durably (or was
     * stored before under the same idempotency key: then {@see PushedJob::$duplicate} is
     * true and the id is the original job's).
     *
     * @param array<string, mixed> $job  args, kwargs and push options: delay ("5s"),
     *        run_at, priority, result_topic, ... (docs/QUEUES.md)
     */
    public function push(string $queue, array $job = [], ?string $idempotencyKey = null): PushedJob
    {
        $body = self::json((object) $job);
        $path = '/queues/' . rawurlencode($queue) . '/jobs';
        $headers = $idempotencyKey === null ? [] : ['Idempotency-Key: ' . $idempotencyKey];
        [$status, $reply, $location] = $this->send('POST', $path,
            $this->boundQuery('POST', $path, $idempotencyKey, $body), $body, $headers);
        if (!in_array($status, [200, 201, 202, 409], true) || !isset($reply['id'])) {
            throw self::refused($status, $reply);
        }
        return new PushedJob($queue, (int) $reply['id'], $status === 409 || ($reply['duplicate'] ?? false) === true,
            $location ?? ($path . '/' . $reply['id']));
    }

    /**
     * A job's state: `state`, `attempts`, `last_error` and `result` (docs/QUEUES.md, "Jobs over
     * HTTP"). Throws {@see RefusedException} with status 404 for a job that does not exist or
     * that this key may not see.
     *
     * @return array<string, mixed>
     */
    public function job(string $queue, int $id): array
    {
        $path = '/queues/' . rawurlencode($queue) . '/jobs/' . $id;
        [$status, $reply] = $this->send('GET', $path, $this->boundQuery('GET', $path, null, ''), null);
        if ($status !== 200) {
            throw self::refused($status, $reply);
        }
        return $reply;
    }

    /** @return array<string, string> */
    private function crossbarQuery(string $body): array
    {
        $ts = Signature::timestamp();
        $nonce = Signature::nonce();
        return ['key' => $this->key, 'timestamp' => $ts, 'seq' => '1', 'nonce' => $nonce,
            'signature' => Signature::crossbar($this->secret, $this->key, $ts, '1', $nonce, $body)];
    }

    /** @return array<string, string> */
    private function boundQuery(string $method, string $path, ?string $idempotencyKey, string $body): array
    {
        $ts = Signature::timestamp();
        $nonce = Signature::nonce();
        return ['key' => $this->key, 'timestamp' => $ts, 'seq' => '1', 'nonce' => $nonce,
            'signature' => Signature::bound($this->secret, $method, $path, $this->key, $ts, '1', $nonce,
                $idempotencyKey, $body)];
    }

    /**
     * @param array<string, string> $query
     * @param list<string> $headers
     * @return array{0: int, 1: array<string, mixed>, 2: ?string}  status, JSON answer, Location
     */
    private function send(string $method, string $path, array $query, ?string $body, array $headers = []): array
    {
        $url = $this->base . $path . '?' . http_build_query($query, '', '&', PHP_QUERY_RFC3986);
        $ch = curl_init($url);
        if ($ch === false) {
            throw new TransportException('cannot initialise curl');
        }
        $location = null;
        $options = [
            CURLOPT_CUSTOMREQUEST => $method,
            CURLOPT_HTTPHEADER => array_merge(['Content-Type: application/json', 'Expect:'], $headers),
            CURLOPT_RETURNTRANSFER => true,
            CURLOPT_CONNECTTIMEOUT => $this->options['connect_timeout'] ?? 5,
            CURLOPT_TIMEOUT => $this->options['timeout'] ?? 30,
            CURLOPT_FOLLOWLOCATION => false,
            CURLOPT_HEADERFUNCTION => static function ($ch, string $line) use (&$location): int {
                if (stripos($line, 'location:') === 0) {
                    $location = trim(substr($line, 9));
                }
                return strlen($line);
            },
        ];
        if ($body !== null) {
            $options[CURLOPT_POSTFIELDS] = $body; // a string: sent as is, the bytes that were signed
        }
        if (isset($this->options['ca_file'])) {
            $options[CURLOPT_CAINFO] = $this->options['ca_file'];
        }
        curl_setopt_array($ch, $options);
        $answer = curl_exec($ch);
        if ($answer === false) {
            $error = curl_error($ch);
            curl_close($ch);
            throw new TransportException("cannot reach the Switchyard bridge at {$this->base}: $error");
        }
        $status = (int) curl_getinfo($ch, CURLINFO_RESPONSE_CODE);
        curl_close($ch);
        $reply = json_decode((string) $answer, true);
        if (!is_array($reply)) {
            throw new TransportException("the bridge answered $method $path with HTTP $status and no JSON object: "
                . substr((string) $answer, 0, 200));
        }
        return [$status, $reply, $location];
    }

    /** @param array<string, mixed> $reply */
    private static function refused(int $status, array $reply): RefusedException
    {
        return new RefusedException($status, (string) ($reply['error'] ?? 'unknown'),
            (string) ($reply['message'] ?? json_encode($reply)), $reply);
    }

    private static function json(mixed $value): string
    {
        return json_encode($value, JSON_THROW_ON_ERROR | JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE
            | JSON_PRESERVE_ZERO_FRACTION);
    }

    /** @return list<mixed> */
    private static function listOf(mixed $v): array
    {
        return is_array($v) ? array_values($v) : [];
    }

    /** @return array<string, mixed> */
    private static function mapOf(mixed $v): array
    {
        return is_array($v) ? $v : [];
    }
}
