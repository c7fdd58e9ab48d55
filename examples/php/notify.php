<?php
// Scenario 1, a notification for one user: published on the user's own topic; only that
// user's sessions may subscribe to it. Usage: php notify.php USER_ID MESSAGE

declare(strict_types=1);

use Switchyard\Client;

$config = require __DIR__ . '/config.php';
$switchyard = new Client($config['bridge'], $config['key'], $config['secret']);

[, $userId, $message] = $argv + [null, 'alice', 'Your order has shipped'];
$id = $switchyard->publish("com.shop.user.$userId.notifications", [$message], ['at' => date(DATE_ATOM)]);
echo "published $id\n";
