// Reconnect and resume: a gateway killed under a client (through a load
// balancer, to another node), a Redis outage, a Redis that restarts empty
// (a new epoch, told with `recovered: false`), and a page reload that resumes
// from stored positions. The application sees each message once, in order.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { client, disconnects, record, rows, startNode, startProxy, startRedis, waitFor, within } from './support.mjs';

/** What a room with these texts looks like, from seq 1. */
const expected = (texts) => texts.map(([user, text], i) => [i + 1, user, text]);

test('a client whose gateway is killed reconnects through the balancer to another node and misses nothing', async (t) => {
  const redis = await startRedis();
  const a = await startNode(['--redis-url', redis.url]);
  const b = await startNode(['--redis-url', redis.url]);
  const joins = [];
  const onClientFrame = (text) => {
    const f = JSON.parse(text);
    if (f.type === 'join') joins.push(f);
  };
  const proxy = await startProxy([a.addr, b.addr], { onClientFrame });
  t.after(async () => (await a.kill(), await b.kill(), await proxy.close(), await redis.stop()));

  const ann = client(b.url(), { name: 'ann' });
  const bob = client(proxy.url(), { name: 'bob' }); // lands on A while A lives
  t.after(() => (ann.close(), bob.close()));
  const annSeen = await record(ann, 'lobby');
  const bobSeen = await record(bob, 'lobby');
  assert.equal(bob.session.node, a.id);
  const bobDown = disconnects(bob);

  const texts = [];
  const say = async (who, room, text) => {
    texts.push([who, text]);
    return room.send(text);
  };
  for (let i = 1; i <= 5; i++) await say('ann', annSeen.room, `before ${i}`);
  await waitFor('bob to hear 5', () => bobSeen.messages.length >= 5);
  const held = bobSeen.messages[4];

  // A crashes; the balancer has no node for Bob for a while, during which Ann
  // goes on talking and Bob writes: his send waits in the outbox.
  proxy.refuse(true);
  await a.kill();
  await waitFor('bob to notice', () => bobDown.length > 0);
  assert.equal(bobDown[0].willReconnect, true);
  const bobsSend = bobSeen.room.send('sent while away');
  for (let i = 1; i <= 5; i++) await say('ann', annSeen.room, `meanwhile ${i}`);
  texts.push(['bob', 'sent while away']);
  await waitFor('bob to have tried again', () => bobDown.length >= 2);
  assert.equal(bobSeen.messages.length, 5, 'bob cannot have heard these yet');
  proxy.refuse(false);

  await within(bobsSend, "bob's send to be acked after the reconnect");
  assert.equal(bob.session.node, b.id, 'bob is on B now');
  await say('ann', annSeen.room, 'after');
  const all = expected(texts);
  await waitFor('bob to hear everything', () => bobSeen.messages.length >= all.length);
  await waitFor('ann to hear everything', () => annSeen.messages.length >= all.length);
  assert.deepEqual(rows(bobSeen.messages), all, 'bob: every message once, in order');
  assert.deepEqual(rows(annSeen.messages), all, 'ann agrees');
  assert.equal(bobSeen.joined.length, 2);
  assert.equal(bobSeen.joined[1].recovered, true, 'resumed from history');
  assert.deepEqual(bobSeen.gaps, []);
  assert.deepEqual(joins[0], { type: 'join', room: 'lobby' }, 'the first join has nothing to resume');
  assert.deepEqual(joins.at(-1), { type: 'join', room: 'lobby', since: { epoch: held.epoch, seq: 5, id: held.id } }, 'the rejoin resumes after the last message held, naming it');
});

test('through a Redis outage: sends are retried until Redis is back, nothing is lost or repeated', async (t) => {
  const redis = await startRedis();
  const a = await startNode(['--redis-url', redis.url]);
  const b = await startNode(['--redis-url', redis.url]);
  t.after(async () => (await a.kill(), await b.kill(), await redis.stop()));
  const ann = client(a.url(), { name: 'ann' });
  const bob = client(b.url(), { name: 'bob' });
  t.after(() => (ann.close(), bob.close()));
  const annSeen = await record(ann, 'lobby');
  const bobSeen = await record(bob, 'lobby');
  for (let i = 1; i <= 3; i++) await annSeen.room.send(`before ${i}`);

  await redis.stopKeepingData();
  // Sent while Redis is down: the gateway answers `unavailable` (retryable) and the client retries.
  const during = [1, 2, 3].map((i) => bobSeen.room.send(`during ${i}`));
  await waitFor('the gateway to answer unavailable', () => bobSeen.errors.some((e) => e.code === 'unavailable' && e.retryable));
  await redis.restart();
  const acks = await within(Promise.all(during), 'the sends made during the outage to be acked');
  assert.deepEqual(acks.map((x) => x.seq).sort(), [4, 5, 6]);
  await annSeen.room.send('after');

  for (const seen of [annSeen, bobSeen]) {
    await waitFor('7 messages', () => seen.messages.length >= 7);
    assert.deepEqual(seen.messages.map((m) => m.seq), [1, 2, 3, 4, 5, 6, 7], 'once each, in order');
    assert.deepEqual(new Set(seen.messages.map((m) => m.epoch)).size, 1, 'one epoch');
  }
  assert.deepEqual(rows(annSeen.messages), rows(bobSeen.messages));
  assert.deepEqual(bobSeen.messages.slice(3, 6).map((m) => m.text).sort(), ['during 1', 'during 2', 'during 3']);
});

test('when Redis restarts empty, the room restarts at a new epoch: joined(recovered false), then its messages from seq 1', async (t) => {
  const redis = await startRedis();
  const a = await startNode(['--redis-url', redis.url]);
  t.after(async () => (await a.kill(), await redis.stop()));
  const ann = client(a.url(), { name: 'ann' });
  const bob = client(a.url(), { name: 'bob' });
  t.after(() => (ann.close(), bob.close()));
  const annSeen = await record(ann, 'lobby');
  const bobSeen = await record(bob, 'lobby');
  for (let i = 1; i <= 3; i++) await annSeen.room.send(`old ${i}`);
  await waitFor('bob to hear 3', () => bobSeen.messages.length >= 3);
  const oldEpoch = bobSeen.messages[0].epoch;

  await redis.stopLosingData();
  await redis.restart();
  // Redis is back, empty: the gateway restarts its members at the new epoch unasked.
  await waitFor('bob to be told the room restarted', () => bobSeen.joined.some((j) => !j.recovered));
  const restart = bobSeen.joined.find((j) => !j.recovered);
  assert.notEqual(restart.epoch, oldEpoch);
  assert.equal(bobSeen.room.epoch, restart.epoch, 'position reset to the new epoch');

  await waitFor('ann restarted too', () => annSeen.joined.some((j) => !j.recovered));
  const ack = await within(annSeen.room.send('new 1'), 'a send at the new epoch');
  assert.equal(ack.seq, restart.seq + 1);
  await waitFor('bob to hear the new message', () => bobSeen.messages.length >= 4);
  const latest = bobSeen.messages.at(-1);
  assert.deepEqual([latest.epoch, latest.seq, latest.text], [restart.epoch, restart.seq + 1, 'new 1'], 'not dropped as an old seq');
});

test('with storage, a new client (a reloaded page) resumes where the last one left off', async (t) => {
  const node = await startNode();
  t.after(() => node.kill());
  const ann = client(node.url(), { name: 'ann' });
  t.after(() => ann.close());
  const annSeen = await record(ann, 'lobby');
  const storage = new Map();
  const sessionStorage = {
    getItem: (k) => storage.get(k) ?? null,
    setItem: (k, v) => storage.set(k, v),
    removeItem: (k) => storage.delete(k),
  };
  const page1 = client(node.url(), { name: 'bob' }, { storage: sessionStorage });
  const first = await record(page1, 'lobby');
  for (let i = 1; i <= 3; i++) await annSeen.room.send(`seen ${i}`);
  await waitFor('bob to hear 3', () => first.messages.length >= 3);
  page1.close();
  for (let i = 1; i <= 2; i++) await annSeen.room.send(`missed ${i}`);
  const held = JSON.parse(storage.get('palaver:lobby'));
  assert.deepEqual(held, { epoch: first.messages[2].epoch, seq: 3, id: first.messages[2].id }, 'the position, with the id sent in `since`');

  const page2 = client(node.url(), { name: 'bob' }, { storage: sessionStorage });
  t.after(() => page2.close());
  const second = await record(page2, 'lobby');
  assert.equal(second.joined[0].recovered, true);
  await waitFor('the missed messages', () => second.messages.length >= 2);
  assert.deepEqual(rows(second.messages), [[4, 'ann', 'missed 1'], [5, 'ann', 'missed 2']], 'only what this page had not seen');
});

test('a rolling restart (SIGTERM, close 1001) moves the client to another node without loss', async (t) => {
  const redis = await startRedis();
  const a = await startNode(['--redis-url', redis.url]);
  const b = await startNode(['--redis-url', redis.url]);
  const proxy = await startProxy([a.addr, b.addr]);
  t.after(async () => (await a.kill(), await b.kill(), await proxy.close(), await redis.stop()));
  const ann = client(b.url(), { name: 'ann' });
  const bob = client(proxy.url(), { name: 'bob' });
  t.after(() => (ann.close(), bob.close()));
  const annSeen = await record(ann, 'lobby');
  const bobSeen = await record(bob, 'lobby');
  const bobDown = disconnects(bob);
  await annSeen.room.send('one');
  await a.terminate();
  await annSeen.room.send('two');
  await waitFor('bob back on B', () => bob.state === 'connected' && bob.session.node === b.id && bobSeen.room.joined);
  await annSeen.room.send('three');
  await waitFor('bob to hear 3', () => bobSeen.messages.length >= 3);
  assert.equal(bobDown[0].code, 1001);
  assert.deepEqual(rows(bobSeen.messages), [[1, 'ann', 'one'], [2, 'ann', 'two'], [3, 'ann', 'three']]);
});
