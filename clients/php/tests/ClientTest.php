<?php

declare(strict_types=1);

namespace Switchyard\Tests;

use PHPUnit\Framework\TestCase;
use Switchyard\Client;
use Switchyard\Exception\CallError;
use Switchyard\Exception\RefusedException;
use Switchyard\Exception\TransportException;

/**
 * The client against a real router: publish reaches an HTTP subscriber (the app, which
 * verifies the router's signature), a call reaches an HTTP callee, a pushed job is retried
 * until the app's endpoint accepts it, and every refusal comes back as the right exception.
 */
final class ClientTest extends TestCase
{
    private static RouterFixture $router;

    public static function setUpBeforeClass(): void
    {
        self::$router = new RouterFixture();
    }

    public static function tearDownAfterClass(): void
    {
        self::$router->stop();
    }

    private function client(?string $secret = null): Client
    {
        return new Client(self::$router->bridge, RouterFixture::KEY, $secret ?? RouterFixture::SECRET);
    }

    public function testPublishReachesTheAppsSubscriberEndpointSigned(): void
    {
        $id = $this->client()->publish('com.shop.user.alice.notifications', ['Your order shipped'], ['order' => 4711]);
        $this->assertGreaterThan(0, $id);
        $lines = RouterFixture::eventually(fn () => self::$router->lines('events.log') ?: null);
        $this->assertNotNull($lines, 'the app got no event; refused: ' . implode(',', self::$router->lines('refused.log')));
        $event = json_decode($lines[0], true);
        $this->assertSame('com.shop.user.alice.notifications', $event['topic']);
        $this->assertSame(['Your order shipped'], $event['args']);
        $this->assertSame(['order' => 4711], $event['kwargs']);
        $this->assertSame($id, $event['publication']);
        $this->assertSame([], self::$router->lines('refused.log'));
    }

    public function testCallReachesTheHttpCallee(): void
    {
        $result = $this->client()->call('com.shop.inventory', ['sku-1']);
        $reply = $result->value();
        $this->assertSame(200, $reply['status'], 'the app answered: ' . json_encode($reply));
        $this->assertSame(['item' => 'sku-1', 'stock' => 7], json_decode($reply['body'], true));
    }

    public function testACallErrorIsACallError(): void
    {
        try {
            $this->client()->call('com.shop.nowhere');
            $this->fail('no CallError');
        } catch (CallError $e) {
            $this->assertSame('wamp.error.no_such_procedure', $e->uri);
        }
    }

    public function testAPushedJobIsRetriedUntilTheAppAcceptsIt(): void
    {
        $client = $this->client();
        $job = $client->push('pdf', ['args' => [4711]], 'invoice-4711');
        $this->assertFalse($job->duplicate);
        $this->assertStringStartsWith('/queues/pdf/jobs/', $job->location);
        $again = $client->push('pdf', ['args' => [4711]], 'invoice-4711');
        $this->assertTrue($again->duplicate);
        $this->assertSame($job->id, $again->id);
        $attempts = RouterFixture::eventually(function () use ($job) {
            $mine = array_values(array_filter(self::$router->lines('pdf.log'),
                fn ($l) => str_starts_with($l, "$job->id ")));
            return count($mine) >= 2 ? $mine : null;
        });
        $this->assertSame(["$job->id 1", "$job->id 2"], $attempts);
        // the job's state over HTTP: completed after its second attempt, with the app's answer
        $state = RouterFixture::eventually(function () use ($client, $job) {
            $s = $client->job('pdf', $job->id);
            return ($s['state'] ?? null) === 'completed' ? $s : null;
        });
        $this->assertNotNull($state, json_encode($client->job('pdf', $job->id)));
        $this->assertSame(2, $state['attempts']);
    }

    public function testAnUnknownJobIsA404(): void
    {
        try {
            $this->client()->job('pdf', 987654321);
            $this->fail('no RefusedException');
        } catch (RefusedException $e) {
            $this->assertSame(404, $e->status);
        }
    }

    public function testAWrongSecretIsRefused(): void
    {
        try {
            $this->client('not-the-secret-0123456789')->publish('com.shop.user.bob.x');
            $this->fail('no RefusedException');
        } catch (RefusedException $e) {
            $this->assertSame(401, $e->status);
        }
    }

    public function testAnUnknownQueueIsRefused(): void
    {
        try {
            $this->client()->push('nope', ['args' => [1]]);
            $this->fail('no RefusedException');
        } catch (RefusedException $e) {
            $this->assertSame(404, $e->status);
            $this->assertSame('switchyard.queue.error.unknown_queue', $e->error);
        }
    }

    public function testAnUnreachableRouterIsATransportError(): void
    {
        $this->expectException(TransportException::class);
        (new Client('http://127.0.0.1:' . RouterFixture::freePort(), 'k', 's'))->publish('a.b');
    }
}
