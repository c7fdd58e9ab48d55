<?php
// Scenario 2, the worker: the endpoint the router POSTs each PDF job to (a queue HTTP target,
// `php -S 127.0.0.1:9000 render-pdf.php` here; a controller in a real app). It accepts only
// requests the router signed, answers 2xx when the job is done, and anything else to have it
// retried by the queue's policy.

declare(strict_types=1);

use Switchyard\Signature;

$config = require __DIR__ . '/config.php';

if (!Signature::verifyCurrentRequest($config['app_secret'], 'switchyard')) {
    http_response_code(401);
    return;
}
$job = json_decode((string) file_get_contents('php://input'), true);
$order = (int) ($job['args'][0] ?? 0);
$attempt = (int) ($_SERVER['HTTP_X_SWITCHYARD_ATTEMPT'] ?? 1);

// The renderer is flaky: the first attempt of every job fails, and the queue retries it.
if ($attempt === 1) {
    http_response_code(503);
    echo json_encode(['error' => 'renderer busy']);
    return;
}
header('Content-Type: application/json');
echo json_encode(['pdf' => "/invoices/$order.pdf", 'attempt' => $attempt]);
