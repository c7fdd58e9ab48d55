<?php

declare(strict_types=1);

namespace Switchyard;

/** A job the router stored: its id, and where to ask how it is doing ({@see Client::job()}). */
final class PushedJob
{
    public function __construct(
        public readonly string $queue,
        public readonly int $id,
        /** True when the idempotency key was seen before: $id is the original job's. */
        public readonly bool $duplicate,
        /** The job's URL path on the bridge (`Location`). */
        public readonly string $location,
    ) {
    }
}
