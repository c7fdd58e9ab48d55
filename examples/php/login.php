<?php
// Scenario 1, the app's side of a login: once the app has authenticated its user (its own
// session, its own password check), it mints a short-lived JWT the browser passes to the router
// as its WAMP ticket. Usage: php login.php USER_ID   (prints the token)

declare(strict_types=1);

use Switchyard\Jwt;

$config = require __DIR__ . '/config.php';

function switchyard_ticket(array $config, string $userId): string
{
    return Jwt::mint(['sub' => $userId, 'aud' => 'switchyard'], $config['jwt_secret'], 'HS256', ttl: 300);
}

echo switchyard_ticket($config, $argv[1] ?? 'alice'), "\n";
