<?php
// Scenario 3, a signed call: the app asks another service (here com.shop.price, registered by
// any WAMP client) without knowing where it runs. Usage: php signed-call.php SKU

declare(strict_types=1);

use Switchyard\Client;
use Switchyard\Exception\CallError;

$config = require __DIR__ . '/config.php';
$switchyard = new Client($config['bridge'], $config['key'], $config['secret']);

try {
    $price = $switchyard->call('com.shop.price', [$argv[1] ?? 'sku-1'], [], ['timeout' => 5000])->value();
    echo json_encode(['price' => $price]), "\n";
} catch (CallError $e) {
    fwrite(STDERR, "the call failed: {$e->uri}\n");
    exit(1);
}
