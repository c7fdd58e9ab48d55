<?php

declare(strict_types=1);

namespace Switchyard\Tests;

/**
 * A real Switchyard router (the binary named by SWITCHYARD_BIN, default the repository's
 * target/debug/switchyard) with an HTTP bridge, and the application (tests/app/router.php
 * under `php -S`) it sends requests to. Both listen on free loopback ports and are stopped by
 * stop() (and at exit).
 */
final class RouterFixture
{
    public const KEY = 'shop';
    public const SECRET = 'shop-secret-0123456789abcdef';
    public const APP_SECRET = 'app-secret-0123456789abcdef';

    public string $bridge;
    public string $state;
    public string $log;
    /** @var list<resource> */
    private array $procs = [];

    public static function binary(): string
    {
        $bin = getenv('SWITCHYARD_BIN') ?: dirname(__DIR__, 3) . '/target/debug/switchyard';
        if (!is_executable($bin)) {
            throw new \RuntimeException("router binary not found: $bin (cargo build, or set SWITCHYARD_BIN)");
        }
        return $bin;
    }

    public static function freePort(): int
    {
        $s = stream_socket_server('tcp://127.0.0.1:0', $errno, $error);
        if ($s === false) {
            throw new \RuntimeException("cannot bind a port: $error");
        }
        $name = (string) stream_socket_get_name($s, false);
        fclose($s);
        return (int) substr($name, strrpos($name, ':') + 1);
    }

    /** @param string $extraToml  more config, appended (e.g. roles) */
    public function __construct(string $extraToml = '')
    {
        $dir = sys_get_temp_dir() . '/switchyard-php-' . bin2hex(random_bytes(6));
        mkdir($dir);
        mkdir("$dir/state");
        $this->state = "$dir/state";
        $this->log = "$dir/router.log";
        $app = self::freePort();
        $bridge = self::freePort();
        $wamp = self::freePort();
        $this->bridge = "http://127.0.0.1:$bridge";

        $this->spawn([PHP_BINARY, '-S', "127.0.0.1:$app", __DIR__ . '/app/router.php'], "$dir/app.log",
            ['SWITCHYARD_APP_STATE' => $this->state, 'SWITCHYARD_APP_SECRET' => self::APP_SECRET]);
        self::waitPort($app);

        $key = self::KEY;
        $secret = self::SECRET;
        $appSecret = self::APP_SECRET;
        file_put_contents("$dir/switchyard.toml", <<<TOML
            [[listener]]
            type = "websocket"
            address = "127.0.0.1:$wamp"
            path = "/ws"

            [[realm]]
            name = "realm1"

            [[realm.queue]]
            name = "pdf"
            target = { http = { url = "http://127.0.0.1:$app/pdf" } }
            retry = { kind = "fixed", times = 3, spacing = "100ms" }

            [realm.queue_http]
            key = "switchyard"
            secret = "$appSecret"

            [[bridge]]
            address = "127.0.0.1:$bridge"
            realm = "realm1"

            [[bridge.key]]
            key = "$key"
            secret = "$secret"
            authid = "shop-backend"
            role = "backend"

            [[bridge.subscriber]]
            topic = "com.shop.user."
            match = "prefix"
            url = "http://127.0.0.1:$app/events"
            key = "switchyard"
            secret = "$appSecret"

            [[bridge.callee]]
            procedure = "com.shop.inventory"
            url = "http://127.0.0.1:$app/inventory"
            key = "switchyard"
            secret = "$appSecret"

            $extraToml
            TOML);
        $this->spawn([self::binary(), '--config', "$dir/switchyard.toml", '--data-dir', "$dir/data"],
            $this->log, []);
        self::waitPort($bridge);
        register_shutdown_function([$this, 'stop']);
    }

    /** @param list<string> $argv @param array<string, string> $env */
    private function spawn(array $argv, string $log, array $env): void
    {
        $p = proc_open($argv, [0 => ['file', '/dev/null', 'r'], 1 => ['file', $log, 'a'], 2 => ['file', $log, 'a']],
            $pipes, null, $env + getenv());
        if (!is_resource($p)) {
            throw new \RuntimeException('cannot start ' . $argv[0]);
        }
        $this->procs[] = $p;
    }

    private static function waitPort(int $port): void
    {
        $deadline = microtime(true) + 15;
        while (microtime(true) < $deadline) {
            $s = @stream_socket_client("tcp://127.0.0.1:$port", $errno, $error, 0.2);
            if ($s !== false) {
                fclose($s);
                return;
            }
            usleep(50_000);
        }
        throw new \RuntimeException("nothing listens on 127.0.0.1:$port after 15 s");
    }

    /** Waits (at most $seconds) until $probe returns a value other than null, and returns it. */
    public static function eventually(callable $probe, float $seconds = 10.0): mixed
    {
        $deadline = microtime(true) + $seconds;
        do {
            $v = $probe();
            if ($v !== null) {
                return $v;
            }
            usleep(50_000);
        } while (microtime(true) < $deadline);
        return null;
    }

    /** @return list<string> the lines of a state file the app wrote */
    public function lines(string $file): array
    {
        $text = @file_get_contents("$this->state/$file");
        return $text === false ? [] : array_values(array_filter(explode("\n", $text), 'strlen'));
    }

    public function stop(): void
    {
        foreach ($this->procs as $p) {
            if (is_resource($p)) {
                proc_terminate($p, 15);
                $deadline = microtime(true) + 5;
                while (proc_get_status($p)['running'] && microtime(true) < $deadline) {
                    usleep(20_000);
                }
                if (proc_get_status($p)['running']) {
                    proc_terminate($p, 9);
                }
                proc_close($p);
            }
        }
        $this->procs = [];
    }
}
