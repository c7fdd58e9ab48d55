<?php
// Where the scenario scripts find the router, and the secrets they share with it
// (examples/php/switchyard.toml). Production: read the secrets from files or the environment.

declare(strict_types=1);

require __DIR__ . '/../../clients/php/src/autoload.php';

return [
    'bridge' => getenv('SWITCHYARD_BRIDGE') ?: 'http://127.0.0.1:8090',
    'key' => 'shop-app',
    'secret' => getenv('SWITCHYARD_SECRET') ?: 'dev-only-bridge-secret-0123456789',
    'jwt_secret' => getenv('SWITCHYARD_JWT_SECRET') ?: 'dev-only-jwt-secret-change-me-0123456789',
    'app_secret' => getenv('SWITCHYARD_APP_SECRET') ?: 'dev-only-app-secret-0123456789',
];
