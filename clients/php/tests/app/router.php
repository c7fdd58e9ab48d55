<?php
// The application side of the PHP scenarios, served by `php -S` (tests/RouterFixture.php):
// endpoints the router sends requests to, each verifying the router's signature with
// Switchyard\Signature, and recording what it got in $SWITCHYARD_APP_STATE (a directory).
//
//   POST /events     an HTTP subscriber's endpoint: per-user notifications
//   POST /pdf        a queue HTTP target: renders a "PDF"; the first attempt of each job fails (500)
//   POST /inventory  an HTTP callee: answers a stock level

declare(strict_types=1);

require __DIR__ . '/../../src/autoload.php';

use Switchyard\Signature;

$state = (string) getenv('SWITCHYARD_APP_STATE');
$secret = (string) getenv('SWITCHYARD_APP_SECRET');
$path = (string) parse_url($_SERVER['REQUEST_URI'] ?? '/', PHP_URL_PATH);

/** Replay protection for the tests: a signature is accepted once (a file per signature). */
$firstSeen = static function (string $signature) use ($state): bool {
    $f = @fopen($state . '/seen-' . hash('sha256', $signature), 'x');
    if ($f === false) {
        return false;
    }
    fclose($f);
    return true;
};

function answer(int $status, array $body): void
{
    http_response_code($status);
    header('Content-Type: application/json');
    echo json_encode($body, JSON_UNESCAPED_SLASHES), "\n";
}

if (!in_array($path, ['/events', '/pdf', '/inventory'], true)) {
    answer(404, ['error' => 'no such endpoint']);
    return true;
}
if (!Signature::verifyCurrentRequest($secret, 'switchyard', 300, $firstSeen)) {
    file_put_contents("$state/refused.log", "$path\n", FILE_APPEND | LOCK_EX);
    answer(401, ['error' => 'bad signature']);
    return true;
}
$body = json_decode((string) file_get_contents('php://input'), true);

switch ($path) {
    case '/events':
        file_put_contents("$state/events.log", json_encode($body) . "\n", FILE_APPEND | LOCK_EX);
        answer(200, ['ok' => true]);
        break;
    case '/pdf':
        $job = $_SERVER['HTTP_X_SWITCHYARD_JOB'] ?? '?';
        $attempt = (int) ($_SERVER['HTTP_X_SWITCHYARD_ATTEMPT'] ?? 0);
        file_put_contents("$state/pdf.log", "$job $attempt\n", FILE_APPEND | LOCK_EX);
        if ($attempt < 2) {
            answer(500, ['error' => 'renderer busy, try again']);
        } else {
            $order = $body['args'][0] ?? null;
            answer(200, ['url' => "/pdf/$order.pdf"]);
        }
        break;
    case '/inventory':
        answer(200, ['item' => $body['args'][0] ?? null, 'stock' => 7]);
        break;
}
return true;
