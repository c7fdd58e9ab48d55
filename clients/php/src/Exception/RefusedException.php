<?php

declare(strict_types=1);

namespace Switchyard\Exception;

/**
 * The router refused the request (HTTP 4xx/5xx): a bad signature (401), a role that may
 * not do it (403), an unknown queue (404), a body it cannot read (400), a full queue (503)...
 * `status` is the HTTP status, `error` the router's error code or URI, `getMessage()` its
 * explanation.
 */
final class RefusedException extends SwitchyardException
{
    public function __construct(
        public readonly int $status,
        public readonly string $error,
        string $message,
        public readonly array $body = [],
    ) {
        parent::__construct("HTTP $status $error: $message");
    }
}
