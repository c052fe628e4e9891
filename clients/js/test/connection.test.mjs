// The connection's policies: bounded full-jitter backoff, the heartbeat
// watchdog on a half-dead link (and the retry it causes, deduplicated by the
// server), the close codes that must not loop (1009) or must back off hard
// (1008), and pacing under the server's rate limit.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { backoffCeiling } from '../dist/index.js';
import { client, disconnects, freePort, record, rows, startNode, startProxy, waitFor, within } from './support.mjs';

test('reconnect delays stay under the full-jitter ceiling, capped by maxDelay, and the client connects once a node is there', async (t) => {
  const port = await freePort(); // nothing listens here yet
  const minDelay = 20;
  const maxDelay = 160;
  const bob = client(`ws://127.0.0.1:${port}/ws`, { name: 'bob' }, { minDelay, maxDelay });
  t.after(() => bob.close());
  const down = disconnects(bob);
  const joining = bob.room('lobby').join();
  await waitFor('8 failed attempts', () => down.length >= 8);
  down.slice(0, 8).forEach((d, attempt) => {
    assert.equal(d.willReconnect, true);
    assert.ok(d.delay >= 0 && d.delay <= backoffCeiling(attempt, minDelay, maxDelay), `attempt ${attempt}: ${d.delay} ms`);
    assert.ok(d.delay <= maxDelay);
  });

  const node = await startNode([], { listen: `127.0.0.1:${port}` });
  t.after(() => node.kill());
  const joined = await within(joining, 'the join once the node is up');
  assert.equal(joined.room, 'lobby');
  assert.equal(bob.state, 'connected');
});

test('a link that goes silent is declared dead by the heartbeat; the unacked send is retried and the server deduplicates it', async (t) => {
  const node = await startNode();
  const proxy = await startProxy([node.addr]);
  t.after(async () => (await node.kill(), await proxy.close()));
  const ann = client(node.url(), { name: 'ann' });
  const bob = client(proxy.url(), { name: 'bob' }, { pingInterval: 200, pongTimeout: 300 });
  t.after(() => (ann.close(), bob.close()));
  const annSeen = await record(ann, 'lobby');
  const bobSeen = await record(bob, 'lobby');
  const bobDown = disconnects(bob);
  await bobSeen.room.send('first');

  // Bob's frames still reach the node, the node's no longer reach Bob.
  proxy.muteAll();
  const sending = bobSeen.room.send('ack lost');
  await waitFor('the message to be stored (ann hears it)', () => annSeen.messages.length >= 2);
  const ack = await within(sending, 'the retried send to be acked');
  assert.equal(bobDown[0].code, 4000, 'the watchdog noticed');
  assert.equal(ack.duplicate, true, 'the retry was recognised');
  assert.equal(ack.seq, 2);

  await bobSeen.room.send('third');
  await waitFor('bob to hear 3', () => bobSeen.messages.length >= 3);
  const want = [[1, 'bob', 'first'], [2, 'bob', 'ack lost'], [3, 'bob', 'third']];
  assert.deepEqual(rows(bobSeen.messages), want, 'once each, in order');
  await waitFor('ann to hear 3', () => annSeen.messages.length >= 3);
  assert.deepEqual(rows(annSeen.messages), want);
});

test('close 1009 (frame too big for the server) is reported and not looped on', async (t) => {
  const node = await startNode(['--max-frame', '512']);
  t.after(() => node.kill());
  const bob = client(node.url(), { name: 'bob' }, { maxFrame: 1 << 20 });
  t.after(() => bob.close());
  const seen = await record(bob, 'lobby');
  const errors = [];
  bob.on('error', (e) => errors.push(e));
  const down = disconnects(bob);
  const sending = seen.room.send('x'.repeat(2000));
  await assert.rejects(within(sending, 'the send to fail'), (e) => e.code === 'closed_1009');
  assert.deepEqual(down.map((d) => [d.code, d.willReconnect]), [[1009, false]]);
  assert.equal(errors[0].code, 'closed_1009');
  assert.equal(bob.state, 'disconnected');
});

test('frames over maxFrame are refused by the client before they can cost the connection', async (t) => {
  const node = await startNode();
  t.after(() => node.kill());
  const bob = client(node.url(), { name: 'bob' });
  t.after(() => bob.close());
  const seen = await record(bob, 'lobby');
  await assert.rejects(seen.room.send('x'.repeat(20_000)), (e) => e.code === 'frame_too_large');
  assert.equal(bob.state, 'connected');
});

test('close 1008 (flooding) backs off for policyDelay before reconnecting', async (t) => {
  const node = await startNode(['--rate-limit', '1/s', '--rate-burst', '1', '--rate-strikes', '2']);
  t.after(() => node.kill());
  // No pacing: this client floods on purpose.
  const bob = client(node.url(), { name: 'bob' }, { rate: { perSecond: 1e6, burst: 1e6 }, policyDelay: 5000 });
  t.after(() => bob.close());
  const seen = await record(bob, 'lobby');
  const down = disconnects(bob);
  const errors = [];
  bob.on('error', (e) => errors.push(e));
  for (let i = 0; i < 10; i++) seen.room.send(`flood ${i}`).catch(() => {});
  await waitFor('the 1008 close', () => down.length > 0);
  assert.equal(down[0].code, 1008);
  assert.equal(down[0].willReconnect, true);
  assert.ok(down[0].delay >= 5000, `waits at least policyDelay: ${down[0].delay}`);
  assert.equal(errors.at(-1).code, 'closed_1008');
});

test('under a low server rate limit, rate_limited refusals are retried with backoff: every send acked once, no 1008', async (t) => {
  const node = await startNode(['--rate-limit', '5/s', '--rate-burst', '5']);
  t.after(() => node.kill());
  const ann = client(node.url(), { name: 'ann' });
  const bob = client(node.url(), { name: 'bob' });
  t.after(() => (ann.close(), bob.close()));
  const annSeen = await record(ann, 'lobby');
  const bobSeen = await record(bob, 'lobby');
  const down = disconnects(bob);
  const texts = Array.from({ length: 30 }, (_, i) => `burst ${i}`);
  const acks = await within(Promise.all(texts.map((text) => bobSeen.room.send(text))), 'all 30 acks');
  assert.ok(bobSeen.errors.some((e) => e.code === 'rate_limited'), 'the limit was hit');
  assert.deepEqual(acks.map((a) => a.seq).sort((x, y) => x - y), Array.from({ length: 30 }, (_, i) => i + 1));
  assert.deepEqual(down, [], 'never disconnected');
  await waitFor('ann to hear 30', () => annSeen.messages.length >= 30);
  assert.deepEqual(annSeen.messages.map((m) => m.seq), Array.from({ length: 30 }, (_, i) => i + 1));
  assert.deepEqual(annSeen.messages.map((m) => m.text).sort(), [...texts].sort(), 'each text once');
});

test('a send that cannot be acked within sendTimeout rejects with timeout', async (t) => {
  const node = await startNode();
  const proxy = await startProxy([node.addr]);
  t.after(async () => (await node.kill(), await proxy.close()));
  const bob = client(proxy.url(), { name: 'bob' }, { sendTimeout: 300 });
  t.after(() => bob.close());
  const seen = await record(bob, 'lobby');
  const down = disconnects(bob);
  proxy.refuse(true);
  await node.kill(); // and no node to come back to
  await waitFor('bob to notice', () => down.length > 0);
  await assert.rejects(within(seen.room.send('into the void'), 'the deadline'), (e) => e.code === 'timeout' && e.retryable);
});
