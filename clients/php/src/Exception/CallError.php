<?php

declare(strict_types=1);

namespace Switchyard\Exception;

/**
 * A call answered with a WAMP error: the callee's application error (`com.example.invalid`)
 * or the router's (`wamp.error.no_such_procedure`, `wamp.error.timeout`, ...), with the
 * error's positional and keyword arguments.
 */
final class CallError extends SwitchyardException
{
    public function __construct(
        public readonly string $uri,
        public readonly array $args = [],
        public readonly array $kwargs = [],
    ) {
        $first = $args[0] ?? null;
        parent::__construct(is_string($first) ? "$uri: $first" : $uri);
    }
}
