<?php
// Scenario 2, the producer: an order was paid, its invoice PDF is rendered in the background.
// The idempotency key makes a repeated request (a retried form post) one job.
// Usage: php order-paid.php ORDER_ID   (prints the job's id and its Location)

declare(strict_types=1);

use Switchyard\Client;

$config = require __DIR__ . '/config.php';
$switchyard = new Client($config['bridge'], $config['key'], $config['secret']);

$order = (int) ($argv[1] ?? 4711);
$job = $switchyard->push('pdf', ['args' => [$order], 'kwargs' => ['copies' => 1]],
    idempotencyKey: "invoice-$order");
echo json_encode(['id' => $job->id, 'duplicate' => $job->duplicate, 'location' => $job->location]), "\n";
