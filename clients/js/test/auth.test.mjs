// Token mode: a token that expires while connected is closed with 4001; the
// client asks getToken for a new one, reconnects and resumes without loss.
// Guests refused by a token-mode node are reported, not looped.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { client, disconnects, mintToken, record, rows, startNode, waitFor, within } from './support.mjs';

const SECRET = 'test-secret-for-palaver-client';
const now = () => Math.floor(Date.now() / 1000);

for (const tokenIn of ['url', 'frame']) {
  test(`a token expiring while connected (4001) is replaced through getToken, and the room resumes (token in ${tokenIn})`, async (t) => {
    const node = await startNode(['--auth', 'token', '--jwt-leeway', '0s'], { env: { PALAVER_JWT_SECRET: SECRET } });
    t.after(() => node.kill());
    const ann = client(node.url(), { getToken: () => mintToken(SECRET, { sub: 'ann', exp: now() + 3600 }) }, { tokenIn });
    let calls = 0;
    const bob = client(
      node.url(),
      {
        // The first token lives two seconds, the next ones an hour.
        getToken: async () => mintToken(SECRET, { sub: 'bob', exp: now() + (++calls === 1 ? 2 : 3600) }),
      },
      { tokenIn },
    );
    t.after(() => (ann.close(), bob.close()));
    const annSeen = await record(ann, 'lobby');
    const bobSeen = await record(bob, 'lobby');
    const bobDown = disconnects(bob);
    await annSeen.room.send('before expiry');

    await waitFor('the 4001 close at expiry', () => bobDown.length > 0);
    assert.equal(bobDown[0].code, 4001);
    assert.equal(bobDown[0].willReconnect, true);
    await annSeen.room.send('while bob refreshes');
    await waitFor('bob to be back', () => bobSeen.joined.length >= 2);
    assert.equal(calls, 2, 'a new token was asked for');
    assert.equal(bobSeen.joined[1].recovered, true);
    await bobSeen.room.send('back');
    await waitFor('bob to hear 3', () => bobSeen.messages.length >= 3);
    assert.deepEqual(rows(bobSeen.messages), [
      [1, 'ann', 'before expiry'],
      [2, 'ann', 'while bob refreshes'],
      [3, 'bob', 'back'],
    ]);
  });
}

test('a guest refused by a token-mode node (4001, no getToken) is reported and stops', async (t) => {
  const node = await startNode(['--auth', 'token', '--auth-timeout', '1s'], { env: { PALAVER_JWT_SECRET: SECRET } });
  t.after(() => node.kill());
  const bob = client(node.url(), { name: 'bob' });
  t.after(() => bob.close());
  const down = disconnects(bob);
  const errors = [];
  bob.on('error', (e) => errors.push(e));
  await assert.rejects(within(bob.room('lobby').join(), 'the refusal'), (e) => e.code === 'unauthorized');
  assert.deepEqual(down.map((d) => [d.code, d.willReconnect]), [[4001, false]]);
  assert.equal(errors[0].code, 'unauthorized');
});

test('getToken resolving null (signed out) stops the client', async (t) => {
  const node = await startNode(['--auth', 'token'], { env: { PALAVER_JWT_SECRET: SECRET } });
  t.after(() => node.kill());
  const bob = client(node.url(), { getToken: () => null });
  t.after(() => bob.close());
  const down = disconnects(bob);
  bob.connect();
  await waitFor('the stop', () => down.length > 0);
  assert.equal(down[0].willReconnect, false);
  assert.equal(bob.state, 'disconnected');
});
