<?php

declare(strict_types=1);

namespace Switchyard;

/** What a procedure returned: its positional and keyword results. */
final class CallResult
{
    /**
     * @param list<mixed> $args
     * @param array<string, mixed> $kwargs
     */
    public function __construct(public readonly array $args, public readonly array $kwargs)
    {
    }

    /** The single result most procedures return: the first positional one, else the keyword ones. */
    public function value(): mixed
    {
        return $this->args[0] ?? ($this->kwargs === [] ? null : $this->kwargs);
    }
}
