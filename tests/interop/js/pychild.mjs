// An Autobahn|Python program run as a child process of a JS interop test, for what no JS
// client here can do (e.g. a callee that announces call_canceling and so gets INTERRUPTs).
// Not a test file itself (node's test runner runs only *.test.mjs).
//
//   const py = await startPyChild(SCRIPT, [wsUrl, port, base]);  // resolves on "READY"
//   await py.waitLine('INVOKED x');
//   await py.stop();                                              // closes stdin, then kills
//
// The script gets tests/interop/python as argv[1] (to import wamplib), then `args`; it
// prints READY once set up and runs until its stdin closes. Interpreter: the interop venv
// (tests/interop/.venv, made by tests/interop/setup.sh) or $SWITCHYARD_INTEROP_PYTHON.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { T, sleep, withTimeout } from './helpers.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const PY_DIR = path.join(HERE, '..', 'python');
const VENV_PY = process.env.SWITCHYARD_INTEROP_PYTHON || path.join(HERE, '..', '.venv', 'bin', 'python');

/** Starts `script` with `args`; resolves once it printed READY. */
export async function startPyChild(script, args) {
  assert.ok(fs.existsSync(VENV_PY), `no Python venv at ${VENV_PY}: run tests/interop/setup.sh first`);
  const child = spawn(VENV_PY, ['-c', script, PY_DIR, ...args.map(String)],
    { stdio: ['pipe', 'pipe', 'pipe'] });
  const lines = [];
  let stderr = '';
  let waiters = [];
  let buf = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (chunk) => {
    buf += chunk;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      lines.push(buf.slice(0, i).trim());
      buf = buf.slice(i + 1);
    }
    waiters = waiters.filter((w) => !w());
  });
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (c) => { stderr += c; });
  const py = {
    lines,
    /** Resolves when stdout has a line equal to `line`. */
    waitLine(line, ms = T) {
      return withTimeout(new Promise((resolve) => {
        const check = () => {
          if (lines.includes(line)) { resolve(); return true; }
          return false;
        };
        if (!check()) waiters.push(check);
      }), ms, `python child line "${line}" (stdout: ${JSON.stringify(lines)}, stderr: ${stderr.slice(-2000)})`);
    },
    async stop() {
      try { child.stdin.end(); } catch { /* gone */ }
      const exited = new Promise((r) => {
        if (child.exitCode !== null || child.signalCode !== null) r();
        else child.once('exit', r);
      });
      if (await Promise.race([exited.then(() => true), sleep(T).then(() => false)]) === false) {
        child.kill('SIGKILL');
      }
    },
  };
  try {
    await py.waitLine('READY', 15000);
  } catch (e) {
    await py.stop();
    throw e;
  }
  return py;
}

/** An Autobahn|Python callee (msgpack over WebSocket) serving, under `base`:
 *  `.progress(n)` n progressive results (if asked) then `["py-final", asked]`;
 *  `.block(tag)` prints INVOKED tag, sleeps 60 s, and when cancelled prints CANCELLED tag
 *  and re-raises (Autobahn answers wamp.error.runtime_error or canceled);
 *  `.block_args(tag)` the same, but answers its own error com.example.stopped with args. */
const PY_CALLEE = `
import asyncio, sys, types
sys.path.insert(0, sys.argv[1])
from wamplib import connect, run
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import RegisterOptions

async def main(url, port, base):
    router = types.SimpleNamespace(ws_url=url, host="127.0.0.1", ws_port=int(port))
    s = await connect(router, "ws", "msgpack")

    async def progressive(n, details):
        asked = details.progress is not None
        for i in range(n):
            if asked:
                details.progress(i, tag="py")
            await asyncio.sleep(0.005)
        return ["py-final", asked]

    async def blocking(tag, on_cancel):
        print("INVOKED", tag, flush=True)
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            print("CANCELLED", tag, flush=True)
            on_cancel(tag)
            raise
        return "not cancelled"

    def reraise(tag):
        pass

    def own_error(tag):
        raise ApplicationError("com.example.stopped", "stopped by interrupt", tag)

    async def block(tag):
        return await blocking(tag, reraise)

    async def block_args(tag):
        return await blocking(tag, own_error)

    await s.register(progressive, base + ".progress", options=RegisterOptions(details=True))
    await s.register(block, base + ".block")
    await s.register(block_args, base + ".block_args")
    print("READY", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until stdin closes
    await s.close()

run(main(*sys.argv[2:]), timeout=300)
`;

/** Starts PY_CALLEE against the router at `wsUrl`; resolves once it registered. */
export function startPyCallee(wsUrl, base) {
  return startPyChild(PY_CALLEE, [wsUrl, new URL(wsUrl).port, base]);
}
