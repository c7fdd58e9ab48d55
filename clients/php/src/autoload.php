<?php
// A PSR-4 autoloader for applications that do not use Composer:
//     require '/path/to/clients/php/src/autoload.php';
// (With Composer, `composer require switchyard/client` or a path repository
// uses composer.json's autoload section instead.)

declare(strict_types=1);

spl_autoload_register(static function (string $class): void {
    $prefix = 'Switchyard\\';
    if (!str_starts_with($class, $prefix)) {
        return;
    }
    $file = __DIR__ . '/' . str_replace('\\', '/', substr($class, strlen($prefix))) . '.php';
    if (is_file($file)) {
        require $file;
    }
});
