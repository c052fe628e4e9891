// A big room: `joined` gives the count and the first page, presence arrives
// in bounded batches with the server's count, and `membersPage` pages through
// everyone exactly once.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { client, record, startNode, waitFor, within } from './support.mjs';

const MEMBERS = 130; // above the first page (100) and the batching threshold below

test('a big room: count, first page, batched presence and paging', async (t) => {
  const node = await startNode(['--presence-batch-above', '20', '--queue-frames', '4096']);
  t.after(() => node.kill());
  const viewer = client(node.url(), { name: 'viewer' });
  t.after(() => viewer.close());
  const v = await record(viewer, 'big');
  const counts = [];
  v.room.on('members', (m) => counts.push(m));
  assert.equal(v.room.memberCount, 1);
  assert.equal(v.room.membersComplete, true);

  const names = Array.from({ length: MEMBERS }, (_, i) => `m${String(i).padStart(3, '0')}`);
  const others = names.map((name) => client(node.url(), { name }));
  t.after(() => others.forEach((c) => c.close()));
  await within(Promise.all(others.map((c) => c.room('big').join())), 'the members to join');

  // Presence catches up with the server's count (batches carry it).
  await waitFor('the viewer to count everyone', () => v.room.memberCount === MEMBERS + 1);
  assert.ok(counts.length > 0 && counts.at(-1).count === MEMBERS + 1);

  // A late joiner sees the count and only the first page.
  const late = client(node.url(), { name: 'zz-late' });
  t.after(() => late.close());
  const l = await record(late, 'big');
  const joined = l.joined[0];
  assert.equal(joined.memberCount, MEMBERS + 2);
  assert.equal(joined.membersMore, true);
  assert.equal(joined.members.length, 100);
  assert.equal(l.room.membersComplete, false);

  // Paging yields every member once, in order.
  const all = [];
  let after;
  for (;;) {
    const page = await l.room.membersPage({ after, limit: 40 });
    assert.ok(page.members.length <= 40);
    all.push(...page.members);
    if (!page.more) break;
    after = page.members.at(-1);
  }
  assert.deepEqual(all, [...names, 'viewer', 'zz-late'].sort());
  assert.deepEqual(l.room.members, all);

  // A bad page request is refused with the server's error, and the room goes on.
  await assert.rejects(l.room.membersPage({ limit: 0 }), (e) => e.code === 'invalid_field');
  const again = await l.room.membersPage({ limit: 1 });
  assert.deepEqual(again.members, [all[0]]);
});
