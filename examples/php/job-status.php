<?php
// Scenario 2, how is the job doing: state, attempts, last error, result.
// Usage: php job-status.php JOB_ID

declare(strict_types=1);

use Switchyard\Client;

$config = require __DIR__ . '/config.php';
$switchyard = new Client($config['bridge'], $config['key'], $config['secret']);

$job = $switchyard->job('pdf', (int) ($argv[1] ?? 0));
echo json_encode(['state' => $job['state'], 'attempts' => $job['attempts'],
    'last_error' => $job['last_error'], 'result' => $job['result']]), "\n";
