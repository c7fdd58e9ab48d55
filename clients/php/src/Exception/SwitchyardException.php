<?php

declare(strict_types=1);

namespace Switchyard\Exception;

/** Every exception this library throws. */
class SwitchyardException extends \RuntimeException
{
}
