<?php

declare(strict_types=1);

namespace Switchyard\Tests;

use PHPUnit\Framework\TestCase;
use Switchyard\Exception\SwitchyardException;
use Switchyard\Jwt;

/** Tokens checked with an independent verifier (openssl, libsodium, a recomputed HMAC). */
final class JwtTest extends TestCase
{
    /** @return array{0: array<string, mixed>, 1: array<string, mixed>, 2: string, 3: string} */
    private static function split(string $token): array
    {
        [$h, $p, $s] = explode('.', $token);
        $dec = static fn (string $x): string => (string) base64_decode(strtr($x, '-_', '+/'), true);
        return [json_decode($dec($h), true), json_decode($dec($p), true), "$h.$p", $dec($s)];
    }

    public function testHs256(): void
    {
        $secret = str_repeat('k', 32);
        $token = Jwt::mint(['sub' => 'alice', 'role' => 'user'], $secret, 'HS256', 60, 'key-1', 1_800_000_000);
        [$header, $claims, $input, $sig] = self::split($token);
        $this->assertSame(['alg' => 'HS256', 'typ' => 'JWT', 'kid' => 'key-1'], $header);
        $this->assertSame(['sub' => 'alice', 'role' => 'user', 'iat' => 1_800_000_000, 'exp' => 1_800_000_060], $claims);
        $this->assertSame(hash_hmac('sha256', $input, $secret, true), $sig);
        $this->assertStringNotContainsString('=', $token);
        $this->assertSame($claims, Jwt::claims($token));
    }

    public function testHs256RefusesAShortSecret(): void
    {
        $this->expectException(SwitchyardException::class);
        Jwt::mint(['sub' => 'a'], 'short', 'HS256');
    }

    public function testRs256(): void
    {
        $key = openssl_pkey_new(['private_key_bits' => 2048, 'private_key_type' => OPENSSL_KEYTYPE_RSA]);
        $this->assertNotFalse($key);
        openssl_pkey_export($key, $pem);
        $token = Jwt::mint(['sub' => 'bob'], $pem, 'RS256');
        [$header, , $input, $sig] = self::split($token);
        $this->assertSame('RS256', $header['alg']);
        $public = openssl_pkey_get_details($key)['key'];
        $this->assertSame(1, openssl_verify($input, $sig, $public, OPENSSL_ALGO_SHA256));
    }

    /** RFC 8037 appendix A.1/A.2's Ed25519 key, as a seed and as a PKCS#8 PEM. */
    public function testEdDsa(): void
    {
        $b64url = static fn (string $x): string => (string) base64_decode(strtr($x, '-_', '+/'), true);
        $seed = $b64url('nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=');
        $public = $b64url('11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo=');
        $pem = "-----BEGIN PRIVATE KEY-----\n"
            . base64_encode(hex2bin('302e020100300506032b657004220420') . $seed)
            . "\n-----END PRIVATE KEY-----\n";
        foreach ([$seed, $pem] as $key) {
            $token = Jwt::mint(['sub' => 'carol'], $key, 'EdDSA');
            [$header, , $input, $sig] = self::split($token);
            $this->assertSame('EdDSA', $header['alg']);
            $this->assertTrue(sodium_crypto_sign_verify_detached($sig, $input, $public));
        }
        // RFC 8037 A.4: the signature of its example input with this key
        $this->assertSame(
            'hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg',
            rtrim(strtr(base64_encode(sodium_crypto_sign_detached(
                'eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc',
                sodium_crypto_sign_secretkey(sodium_crypto_sign_seed_keypair($seed)))), '+/', '-_'), '='));
    }

    public function testUnknownAlgorithm(): void
    {
        $this->expectExceptionMessage('unsupported algorithm "none"');
        Jwt::mint(['sub' => 'a'], 'x', 'none');
    }
}
