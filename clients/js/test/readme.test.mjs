// The README's promise, as an application developer would try it: install the
// package from its path, run the README's example as it is written (only the
// URL changed, to a load balancer in front of two nodes), kill the node it is
// connected to, and see every message once, in order.

import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { client, record, startNode, startProxy, startRedis, waitFor } from './support.mjs';

const pkg = join(dirname(fileURLToPath(import.meta.url)), '..');

/** The README's first JavaScript example. */
function readmeExample() {
  const readme = readFileSync(join(pkg, 'README.md'), 'utf8');
  const block = /```js\n([\s\S]*?)```/.exec(readme);
  assert.ok(block, 'README.md has a ```js example');
  return block[1];
}

test("the README example, installed with npm from the repository path, survives a kill of its node", async (t) => {
  const app = mkdtempSync(join(tmpdir(), 'palaver-client-app-'));
  t.after(() => rmSync(app, { recursive: true, force: true }));
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
  execFileSync('npm', ['install', '--offline', '--no-audit', '--no-fund', pkg], { cwd: app, stdio: 'ignore' });
  symlinkSync(join(pkg, 'node_modules', 'ws'), join(app, 'node_modules', 'ws')); // the README's `npm install ws`

  const redis = await startRedis();
  t.after(() => redis.stop()); // registered at once: a node that fails to start must not leave it running
  const a = await startNode(['--redis-url', redis.url]);
  t.after(() => a.kill());
  const b = await startNode(['--redis-url', redis.url]);
  t.after(() => b.kill());
  const proxy = await startProxy([a.addr, b.addr]);
  t.after(() => proxy.close());

  const example = readmeExample();
  assert.match(example, /'ws:\/\/127\.0\.0\.1:8080\/ws'/);
  writeFileSync(join(app, 'example.mjs'), example.replace('ws://127.0.0.1:8080/ws', proxy.url()));
  const child = spawn(process.execPath, ['example.mjs'], { cwd: app, stdio: ['ignore', 'pipe', 'inherit'] });
  t.after(() => child.kill('SIGKILL'));
  const lines = [];
  createInterface({ input: child.stdout }).on('line', (line) => lines.push(line));
  const said = () => lines.filter((l) => l.startsWith('#'));

  await waitFor('the example to send hello', () => said().includes('#1 ann: hello'));
  const bob = client(b.url(), { name: 'bob' });
  t.after(() => bob.close());
  const lobby = (await record(bob, 'lobby')).room;
  await lobby.send('before the kill');
  await waitFor('the example to hear it', () => said().length >= 2);

  proxy.refuse(true); // no node for the example for a while
  await a.kill();
  await waitFor('the example to notice', () => lines.includes('connection: disconnected'));
  await lobby.send('while it was away 1');
  await lobby.send('while it was away 2');
  proxy.refuse(false);
  await waitFor('the example to reconnect', () => lines.filter((l) => l === 'connection: connected').length >= 2);
  await lobby.send('after');
  await waitFor('the example to hear everything', () => said().length >= 5);
  assert.deepEqual(said(), [
    '#1 ann: hello',
    '#2 bob: before the kill',
    '#3 bob: while it was away 1',
    '#4 bob: while it was away 2',
    '#5 bob: after',
  ]);
  assert.ok(!lines.some((l) => l.includes('messages may be missing')), 'resumed, not restarted');
});
