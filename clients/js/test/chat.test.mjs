// Two clients in a room: messages once each in order, acks, presence, typing,
// history; a gap in the stream filled from history; dedup of a repeated id; a
// refused join.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { client, record, rows, startNode, startProxy, waitFor, within } from './support.mjs';

test('two clients chat: messages in order once each, presence, typing and history', async (t) => {
  const node = await startNode();
  t.after(() => node.kill());
  const ann = client(node.url(), { name: 'ann' });
  const bob = client(node.url(), { name: 'bob' });
  t.after(() => (ann.close(), bob.close()));
  const a = await record(ann, 'lobby');
  const b = await record(bob, 'lobby');
  assert.deepEqual(b.joined[0].members, ['ann', 'bob']);
  await waitFor('ann to see bob arrive', () => a.presence.some((p) => p.user === 'bob' && p.state === 'join'));
  assert.deepEqual(a.room.members, ['ann', 'bob']);

  const acks = await Promise.all([a.room.send('one'), a.room.send('two'), b.room.send('three')]);
  assert.deepEqual(acks.map((x) => x.duplicate), [false, false, false]);
  assert.deepEqual(acks.map((x) => x.seq).sort(), [1, 2, 3]);
  for (const seen of [a, b]) {
    await waitFor('3 messages', () => seen.messages.length >= 3);
    assert.deepEqual(seen.messages.map((m) => m.seq), [1, 2, 3]);
  }
  assert.deepEqual(b.messages.find((m) => m.id === acks[2].id)?.text, 'three');

  b.room.typing();
  await waitFor('ann to see bob typing', () => a.presence.some((p) => p.user === 'bob' && p.state === 'typing'));

  const page = await a.room.history({ before: 3, limit: 10 });
  assert.deepEqual(rows(page.messages), rows(a.messages.slice(0, 2)));
  assert.equal(page.more, false);

  b.room.leave();
  await waitFor('ann to see bob leave', () => a.presence.some((p) => p.user === 'bob' && p.state === 'leave'));
  assert.deepEqual(a.room.members, ['ann']);
});

test('a send repeated with the same id is stored once and acked as a duplicate', async (t) => {
  const node = await startNode();
  t.after(() => node.kill());
  const ann = client(node.url(), { name: 'ann' });
  t.after(() => ann.close());
  const a = await record(ann, 'lobby');
  const first = await a.room.send('once', { id: 'fixed-id-1' });
  const again = await a.room.send('once', { id: 'fixed-id-1' });
  assert.equal(first.duplicate, false);
  assert.equal(again.duplicate, true);
  assert.equal(again.seq, first.seq);
  await a.room.send('after');
  await waitFor('2 messages', () => a.messages.length >= 2);
  assert.deepEqual(rows(a.messages), [[1, 'ann', 'once'], [2, 'ann', 'after']]);
});

test('a refused join rejects and reports the error; the connection stays up', async (t) => {
  const node = await startNode(['--private-rooms', 'staff']);
  t.after(() => node.kill());
  const ann = client(node.url(), { name: 'ann' });
  t.after(() => ann.close());
  const room = ann.room('staff');
  const errors = [];
  room.on('error', (e) => errors.push(e));
  await assert.rejects(within(room.join(), 'the refusal'), (e) => e.code === 'forbidden');
  assert.equal(errors[0]?.code, 'forbidden');
  await assert.rejects(room.send('hi'), (e) => e.code === 'not_joined');
  const lobby = await record(ann, 'lobby');
  assert.equal(ann.state, 'connected');
  assert.equal((await lobby.room.send('still here')).seq, 1);
});

test('a message missing from the stream is fetched with history before later ones are delivered', async (t) => {
  const node = await startNode();
  // Between Bob and the node, the live copy of message 2 is lost once.
  let dropped = 0;
  const lossy = (text) => dropped === 0 && /"type":"message"/.test(text) && /"seq":2,/.test(text) && ++dropped === 1;
  const proxy = await startProxy([node.addr], { dropFromServer: lossy });
  t.after(async () => (await node.kill(), await proxy.close()));
  const ann = client(node.url(), { name: 'ann' });
  const bob = client(proxy.url(), { name: 'bob' });
  t.after(() => (ann.close(), bob.close()));
  const annSeen = await record(ann, 'lobby');
  const bobSeen = await record(bob, 'lobby');
  for (const text of ['one', 'two', 'three', 'four']) await annSeen.room.send(text);
  await waitFor('bob to hear 4', () => bobSeen.messages.length >= 4);
  assert.equal(dropped, 1, 'the proxy did lose message 2');
  assert.deepEqual(rows(bobSeen.messages), [[1, 'ann', 'one'], [2, 'ann', 'two'], [3, 'ann', 'three'], [4, 'ann', 'four']]);
  assert.deepEqual(bobSeen.gaps, []);
  assert.deepEqual(bobSeen.joined.length, 1, 'filled without a reconnect');
});

test('join() on a joined room resolves at once', async (t) => {
  const node = await startNode();
  t.after(() => node.kill());
  const ann = client(node.url(), { name: 'ann' });
  t.after(() => ann.close());
  const seen = await record(ann, 'lobby');
  const again = await within(seen.room.join(), 'the second join');
  assert.equal(again.room, 'lobby');
  assert.equal(seen.joined.length, 1);
});
