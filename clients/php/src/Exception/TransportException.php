<?php

declare(strict_types=1);

namespace Switchyard\Exception;

/** The router could not be reached, or did not answer with JSON. Retrying may help. */
final class TransportException extends SwitchyardException
{
}
