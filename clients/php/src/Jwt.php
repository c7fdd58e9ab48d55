<?php

declare(strict_types=1);

namespace Switchyard;

use Switchyard\Exception\SwitchyardException;

/**
 * Mints JSON Web Tokens (RFC 7519) for a realm that accepts a JWT as its WAMP ticket: the
 * application logs its user in, mints a short-lived token, and the browser passes it as the
 * ticket of its WAMP session (docs/PHP.md).
 *
 * Algorithms: HS256 (a shared secret), RS256 (an RSA private key, PEM), EdDSA (Ed25519: a PEM
 * PKCS#8 private key, or a raw 32-byte seed / 64-byte libsodium secret key; needs ext-sodium).
 */
final class Jwt
{
    /**
     * @param array<string, mixed> $claims  e.g. ['sub' => 'alice', 'role' => 'user', 'aud' => 'switchyard']
     * @param string $key     HS256: the secret; RS256: a PEM private key; EdDSA: see the class
     * @param int|null $ttl   seconds: sets `iat` (now) and `exp` (now + ttl) unless given
     * @param string|null $kid  the key id header (for a realm with several keys or a JWKS)
     */
    public static function mint(array $claims, string $key, string $alg = 'HS256', ?int $ttl = null,
                                ?string $kid = null, ?int $now = null): string
    {
        $now ??= time();
        if ($ttl !== null) {
            $claims += ['iat' => $now, 'exp' => $now + $ttl];
        }
        $header = ['alg' => $alg, 'typ' => 'JWT'];
        if ($kid !== null) {
            $header['kid'] = $kid;
        }
        $input = self::part($header) . '.' . self::part($claims);
        return $input . '.' . self::b64url(self::signature($input, $key, $alg));
    }

    /**
     * The payload of a token, WITHOUT checking its signature (for display and tests; the
     * router checks tokens).
     *
     * @return array<string, mixed>
     */
    public static function claims(string $token): array
    {
        $parts = explode('.', $token);
        if (count($parts) !== 3) {
            throw new SwitchyardException('not a JWT: expected three dot-separated parts');
        }
        $json = base64_decode(strtr($parts[1], '-_', '+/'), true);
        $claims = $json === false ? null : json_decode($json, true);
        if (!is_array($claims)) {
            throw new SwitchyardException('not a JWT: the payload is not a JSON object');
        }
        return $claims;
    }

    private static function signature(string $input, string $key, string $alg): string
    {
        switch ($alg) {
            case 'HS256':
                if (strlen($key) < 32) {
                    throw new SwitchyardException('HS256: use a secret of at least 32 bytes');
                }
                return hash_hmac('sha256', $input, $key, true);
            case 'RS256':
                $private = openssl_pkey_get_private($key);
                if ($private === false) {
                    throw new SwitchyardException('RS256: the key is not a PEM private key: ' . (string) openssl_error_string());
                }
                if (!openssl_sign($input, $signature, $private, OPENSSL_ALGO_SHA256)) {
                    throw new SwitchyardException('RS256: signing failed: ' . (string) openssl_error_string());
                }
                return $signature;
            case 'EdDSA':
                if (!function_exists('sodium_crypto_sign_detached')) {
                    throw new SwitchyardException('EdDSA needs the sodium extension');
                }
                return sodium_crypto_sign_detached($input, self::ed25519SecretKey($key));
            default:
                throw new SwitchyardException("unsupported algorithm \"$alg\" (HS256, RS256 or EdDSA)");
        }
    }

    /** A libsodium secret key from a PEM PKCS#8 Ed25519 key, a 32-byte seed or a 64-byte key. */
    private static function ed25519SecretKey(string $key): string
    {
        if (str_contains($key, '-----BEGIN PRIVATE KEY-----')) {
            $b64 = preg_replace('/-----[^-]+-----|\s+/', '', $key);
            $der = base64_decode((string) $b64, true);
            // PKCS#8 for Ed25519 (RFC 8410): a fixed 16-byte prefix, then the 32-byte seed.
            $prefix = hex2bin('302e020100300506032b657004220420');
            if ($der === false || strlen($der) !== 48 || !str_starts_with($der, (string) $prefix)) {
                throw new SwitchyardException('EdDSA: the PEM key is not an Ed25519 PKCS#8 private key');
            }
            $key = substr($der, 16);
        }
        return match (strlen($key)) {
            SODIUM_CRYPTO_SIGN_SEEDBYTES => sodium_crypto_sign_secretkey(sodium_crypto_sign_seed_keypair($key)),
            SODIUM_CRYPTO_SIGN_SECRETKEYBYTES => $key,
            default => throw new SwitchyardException('EdDSA: the key must be a PEM key, a 32-byte seed or a 64-byte secret key'),
        };
    }

    /** @param array<string, mixed> $value */
    private static function part(array $value): string
    {
        return self::b64url(json_encode($value, JSON_THROW_ON_ERROR | JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE));
    }

    private static function b64url(string $bytes): string
    {
        return rtrim(strtr(base64_encode($bytes), '+/', '-_'), '=');
    }
}
