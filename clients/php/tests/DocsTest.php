<?php

declare(strict_types=1);

namespace Switchyard\Tests;

use PHPUnit\Framework\TestCase;

/**
 * docs/PHP.md shows whole files of examples/php (a block after `<!-- file: PATH -->`), and
 * tests/interop/js/php_scenarios.test.mjs runs those files: each block must be its file.
 */
final class DocsTest extends TestCase
{
    public function testEveryBlockOfThePhpPageIsTheFileItNames(): void
    {
        $repo = dirname(__DIR__, 3);
        $doc = (string) file_get_contents("$repo/docs/PHP.md");
        preg_match_all('/<!-- file: (\S+) -->\n```\w*\n(.*?)\n```/s', $doc, $blocks, PREG_SET_ORDER);
        $this->assertGreaterThanOrEqual(9, count($blocks), 'docs/PHP.md shows fewer example files than expected');
        foreach ($blocks as [, $file, $code]) {
            $this->assertFileExists("$repo/$file");
            $this->assertSame(rtrim((string) file_get_contents("$repo/$file")), $code, "docs/PHP.md's block for $file");
        }
    }
}
