// Palaver web client: one connection, many rooms, no framework. The protocol
// (reconnect, resume with `since`, ordering, retries) is palaver-client's
// (clients/js), bundled as /palaver-client.js; this file is the page.
// All user-provided text goes into the DOM through textContent only.
import { Palaver, messageId } from '/palaver-client.js';

const $ = (id) => document.getElementById(id);
const ROOM_RE = /^[A-Za-z0-9_.:-]{1,64}$/;
const USER_RE = /^[\p{L}\p{M}\p{N} _.-]{1,32}$/u;
const PAGE = 50, MEMBERS_PAGE = 100, TYPING_SEND_MS = 2000, TYPING_SHOW_MS = 3000;

// ---- State -------------------------------------------------------------
const S = {
  name: '', me: '', connection: 'offline', client: null, everConnected: false, failures: 0,
  rooms: new Map(), current: null, lastTyping: 0,
  outbox: [], // pending sends: {id, room, text, ts, status: 'sending'|'failed', el}
};

// Per-room state for the page. The package's Room delivers each message once, in
// order; `epoch` is the epoch of the messages held here.
function newRoom(name) {
  return {
    // members: the names known (all of a small room; of a big one, the first
    // page, who joined since and pages read on demand); shown: how many the
    // list shows at most.
    name, room: null, epoch: null, msgs: [], bySeq: new Map(), stale: [], members: new Set(),
    shown: MEMBERS_PAGE, loadingMembers: false,
    typing: new Map(), unread: 0, loaded: false, olderMore: false, loadingOlder: false,
    notice: '', el: null,
  };
}
const cur = () => S.rooms.get(S.current) || null;

// ---- Small DOM helpers -------------------------------------------------
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
function button(cls, text, label, onClick) {
  const b = el('button', cls, text);
  b.type = 'button';
  if (label) { b.title = label; b.setAttribute('aria-label', label); }
  b.addEventListener('click', onClick);
  return b;
}
const pad = (n) => String(n).padStart(2, '0');
function timeEl(ts) {
  const d = new Date(ts);
  const t = el('time', 'time', `${pad(d.getHours())}:${pad(d.getMinutes())}`);
  t.dateTime = d.toISOString();
  t.title = d.toLocaleString();
  return t;
}
const store = (key, v) => { try { localStorage.setItem(`palaver.${key}`, v); } catch { /* private mode */ } };
const load = (key) => { try { return localStorage.getItem(`palaver.${key}`) || ''; } catch { return ''; } };

// ---- Connection: palaver-client reconnects, resumes and retries -------
function connect() {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:'; // same host as the page
  // In token mode the page is opened as /?token=JWT; the token rides along to the
  // socket. It is the only one the page has: once refused (4001), sign-out is the way.
  const token = new URLSearchParams(location.search).get('token');
  let refused = false;
  const credentials = token ? { name: S.name, getToken: () => (refused ? null : token) } : { name: S.name };
  const client = new Palaver(`${proto}//${location.host}/ws`, credentials, {
    minDelay: 500, maxDelay: 10000, policyDelay: 10000, sendTimeout: Infinity,
  });
  S.client = client;
  let refusal = '';
  const mine = (fn) => (v) => { if (S.client === client) fn(v); };
  client.on('connected', mine((w) => {
    S.me = $('me').textContent = w.user;
    Object.assign(S, { everConnected: true, failures: 0 });
    setConn('connected');
  }));
  client.on('disconnected', mine((d) => {
    for (const r of S.rooms.values()) clearAllTyping(r);
    renderTyping();
    if (d.code === 4001) { refused = true; refusal = d.reason; }
    if (!d.willReconnect || !navigator.onLine) { setConn('offline'); return; }
    setConn('reconnecting');
    if (++S.failures === 3 && !S.everConnected) showError('unreachable', 'Cannot reach the chat server; still trying.');
  }));
  client.on('error', mine((e) => {
    if (e.code === 'unauthorized') showError('unauthorized', refusal || 'The server refused this connection (4001). Sign out and try again.');
    else showError(e.code, e.message);
  }));
  client.connect();
}

function setConn(state) {
  S.connection = state;
  $('conn-state').textContent = state;
  $('conn-state').dataset.state = state;
}

// ---- One room's events ---------------------------------------------------
function watchRoom(r) {
  const live = (fn) => (v) => { if (S.rooms.get(r.name) === r) fn(v); };
  r.room.on('joined', live((j) => onJoined(r, j)));
  r.room.on('message', live((m) => onMessage(r, m)));
  r.room.on('presence', live((p) => onPresence(r, p)));
  r.room.on('members', live(() => { if (r.name === S.current) renderMembers(); }));
  r.room.on('error', live((e) => {
    const retrying = e.retryable && S.outbox.some((x) => x.id === e.ref);
    showError(e.code, e.message + (retrying ? ' (will retry)' : ''));
  }));
  r.room.join().catch(live((e) => { if (e.ref === 'join') leaveRoom(r.name); })); // refused, e.g. forbidden
}

// Joined (or rejoined after a reconnect): show the latest page the first time,
// start over on a new epoch, reload the page if it was lost with a connection.
function onJoined(r, j) {
  r.members = new Set(j.members);
  if (r.epoch === null) {
    r.epoch = j.epoch;
    requestHistory(r, {});
  } else if (!j.recovered) {
    resetEpoch(r, j.epoch, j.seq);
  } else if (!r.loaded) {
    requestHistory(r, { before: r.room.seq + 1 });
  }
  if (r.name === S.current) renderMembers();
}

// History was recreated (new epoch) or messages after `since` expired. With a new
// epoch, shown messages are kept on screen greyed (class "stale-msg", no data-seq,
// not in state) and tracking restarts; with the same epoch they stay valid. Either
// way the latest page is reloaded and a notice says some messages may be missing.
function resetEpoch(r, epoch, seq) {
  if (epoch !== r.epoch) {
    if (r.msgs.length) {
      for (const m of r.msgs) {
        m.el.classList.replace('msg', 'stale-msg');
        m.el.removeAttribute('data-seq');
        r.stale.push(m.el);
      }
      r.stale.push(el('li', 'stale-sep', 'History was reset: the messages above are from before'));
    }
    r.bySeq.clear();
    Object.assign(r, { msgs: [], olderMore: false });
  }
  r.epoch = epoch;
  r.notice = 'Some messages may be missing.';
  requestHistory(r, { before: seq + 1 });
  if (r.name === S.current) renderRoom();
}

// A message, live or replayed: the package delivers each once, in order.
function onMessage(r, m) {
  if (m.epoch !== r.epoch) resetEpoch(r, m.epoch, m.seq - 1);
  keepScroll(() => ingest(r, m, true));
}

function onPresence(r, p) {
  if (p.state === 'join') r.members.add(p.user);
  if (p.state === 'leave') { r.members.delete(p.user); clearTyping(r, p.user); }
  if (p.state === 'typing' && p.user !== S.me) {
    clearTimeout(r.typing.get(p.user));
    r.typing.set(p.user, setTimeout(() => clearTyping(r, p.user), TYPING_SHOW_MS));
  }
  if (r.name === S.current) { renderMembers(); renderTyping(); }
}

// ---- Room message bookkeeping -----------------------------------------
// A page of history (latest, or older before the lowest seq shown).
function requestHistory(r, query) {
  if (!r.room.joined) return;
  r.loadingOlder = true;
  r.room.history({ ...query, limit: PAGE }).then((page) => {
    if (S.rooms.get(r.name) !== r || page.epoch !== r.epoch) return;
    keepScroll(() => { for (const m of page.messages) ingest(r, m, false); }, true);
    Object.assign(r, { loaded: true, olderMore: page.more });
    if (r.name === S.current) renderOlder();
  }, () => { /* lost with the connection: the rejoin asks again */ })
    .finally(() => { r.loadingOlder = false; });
}

// Adds one sequenced message unless known; confirms our own pending send on an id match.
function ingest(r, m, live) {
  if (r.bySeq.has(m.seq)) return;
  const pending = m.user === S.me && S.outbox.find((e) => e.id === m.id && e.room === r.name);
  if (pending) { confirm(pending, m.seq, m.ts); return; }
  const msg = { seq: m.seq, id: m.id, user: m.user, text: m.text, ts: m.ts };
  msg.el = renderMsg(msg, 'sent');
  insertMsg(r, msg);
  if (live) {
    clearTyping(r, m.user);
    if (r.name !== S.current && m.user !== S.me) { r.unread++; renderUnread(r); }
  }
}

// Our pending message got its sequence number (from its ack or its echo).
function confirm(e, seq, ts) {
  if (!S.outbox.includes(e)) return;
  S.outbox.splice(S.outbox.indexOf(e), 1);
  const r = S.rooms.get(e.room);
  if (!r) return;
  if (r.bySeq.has(seq)) { e.el.remove(); return; }
  const msg = { seq, id: e.id, user: S.me, text: e.text, ts: ts || e.ts, el: e.el };
  msg.el.dataset.seq = seq;
  msg.el.dataset.user = S.me;
  setStatus(msg.el, 'sent');
  insertMsg(r, msg);
}

// Keeps r.msgs sorted by seq and, for the current room, the DOM in the same order
// (pending messages stay last).
function insertMsg(r, msg) {
  let lo = 0, hi = r.msgs.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (r.msgs[mid].seq < msg.seq) lo = mid + 1; else hi = mid;
  }
  r.msgs.splice(lo, 0, msg);
  r.bySeq.set(msg.seq, msg);
  if (r.name !== S.current) return;
  const next = r.msgs[lo + 1];
  const firstPending = S.outbox.find((e) => e.room === r.name);
  $('messages').insertBefore(msg.el, next ? next.el : firstPending ? firstPending.el : null);
}

// Runs a DOM change, then sticks to the bottom if the reader was there, or keeps the
// reader's place when older messages were added above (`prepend`).
function keepScroll(fn, prepend = false) {
  const sc = $('scroller');
  const fromBottom = sc.scrollHeight - sc.scrollTop - sc.clientHeight;
  const top = sc.scrollTop;
  fn();
  if (fromBottom < 48) sc.scrollTop = sc.scrollHeight;
  else sc.scrollTop = prepend ? sc.scrollHeight - sc.clientHeight - fromBottom : top;
}

// ---- Sending: the package retries with the same id until acked ---------
function sendMessage() {
  const ta = $('composer');
  const text = ta.value.replace(/^\n+/, '').replace(/\s+$/, '');
  const r = cur();
  if (!r || !text.trim()) return;
  const e = { id: messageId(), room: r.name, text, ts: Date.now(), status: 'sending' };
  e.el = renderMsg({ id: e.id, user: S.me || S.name, text, ts: e.ts }, 'sending');
  S.outbox.push(e);
  ta.value = '';
  autosize();
  $('messages').append(e.el);
  $('scroller').scrollTop = $('scroller').scrollHeight;
  transmit(e);
}

function transmit(e) {
  const r = S.rooms.get(e.room);
  if (!r) return;
  r.room.send(e.text, { id: e.id }).then(
    (ack) => keepScroll(() => confirm(e, ack.seq)),
    (err) => {
      if (!S.outbox.includes(e) || err.code === 'left' || err.code === 'closed') return;
      showError(err.code, err.message);
      e.status = 'failed';
      setStatus(e.el, 'failed', e);
    },
  );
}

function retry(e) {
  e.status = 'sending';
  setStatus(e.el, 'sending', e);
  transmit(e);
}

function sendTyping() {
  const r = cur();
  if (!r || !r.room.joined || !$('composer').value.trim()) return;
  if (Date.now() - S.lastTyping < TYPING_SEND_MS) return;
  r.room.typing();
  S.lastTyping = Date.now();
}

// ---- Rendering ---------------------------------------------------------
function renderMsg(m, status) {
  const li = el('li', 'msg');
  li.dataset.user = m.user;
  li.dataset.id = m.id;
  if (m.seq) li.dataset.seq = m.seq;
  if (m.user === (S.me || S.name)) li.classList.add('own');
  const meta = el('div', 'meta');
  meta.append(el('span', 'author', m.user), timeEl(m.ts), el('span', 'status'));
  li.append(meta, el('div', 'body', m.text));
  setStatus(li, status);
  return li;
}

function setStatus(li, status, entry) {
  li.classList.toggle('pending', status === 'sending');
  li.classList.toggle('failed', status === 'failed');
  li.querySelector('.status').textContent =
    status === 'sending' ? 'sending…' : status === 'failed' ? 'not sent' : '';
  li.querySelector('.retry')?.remove();
  if (status === 'failed' && entry) li.querySelector('.meta').append(button('retry link', 'Retry', '', () => retry(entry)));
}

function renderRoomItem(r) {
  const li = el('li', 'room');
  li.dataset.room = r.name;
  const badge = el('span', 'unread');
  badge.hidden = true;
  const btn = button('room-btn', undefined, '', () => { switchRoom(r.name); closeSidebar(); $('composer').focus(); });
  btn.append(el('span', 'room-name', r.name), badge);
  li.append(btn, button('leave-btn icon-btn', '×', `Leave ${r.name}`, () => leaveRoom(r.name, true)));
  return li;
}

function renderUnread(r) {
  const badge = r.el.querySelector('.unread');
  badge.textContent = r.unread ? (r.unread > 99 ? '99+' : String(r.unread)) : '';
  badge.hidden = !r.unread;
  r.el.querySelector('.room-btn').setAttribute('aria-label', r.unread ? `${r.name}, ${r.unread} unread` : r.name);
}

// Shows the current room: messages (stale, sequenced, pending), notice, members, typing.
function renderRoom() {
  const r = cur();
  const list = $('messages');
  list.setAttribute('aria-busy', 'true');
  if (!r) {
    list.replaceChildren();
    $('room-title').textContent = 'No room';
  } else {
    const pending = S.outbox.filter((e) => e.room === r.name).map((e) => e.el);
    list.replaceChildren(...r.stale, ...r.msgs.map((m) => m.el), ...pending);
    $('room-title').textContent = r.name;
  }
  list.setAttribute('aria-busy', 'false');
  $('composer').disabled = !r;
  $('send-btn').disabled = !r;
  $('composer').placeholder = r ? `Message ${r.name}` : 'Join a room to chat';
  $('composer').setAttribute('aria-label', r ? `Message ${r.name}` : 'Message');
  $('room-notice-text').textContent = r ? r.notice : '';
  $('room-notice').hidden = !(r && r.notice);
  renderOlder();
  renderMembers();
  renderTyping();
  $('scroller').scrollTop = $('scroller').scrollHeight;
}

function renderOlder() {
  const r = cur();
  const lowest = r && r.msgs.length ? r.msgs[0].seq : 0;
  const btn = $('load-older');
  const wasFocused = document.activeElement === btn;
  btn.hidden = !(r && r.olderMore && lowest > 1);
  if (wasFocused && btn.hidden) $('scroller').focus();
}

// The member list shows at most `r.shown` names (a big room has thousands), in
// the server's order (so the last one shown is where the next page starts);
// the count is the server's, cluster-wide. "Show more" reads the next page.
const shownMembers = (r) => [...r.members].sort().slice(0, r.shown);

function renderMembers() {
  const r = cur();
  const names = r ? shownMembers(r) : [];
  const items = names.map((n) => {
    const li = el('li', 'member', n);
    li.dataset.user = n;
    if (n === S.me) { li.classList.add('own'); li.append(el('span', 'you', ' (you)')); }
    return li;
  });
  $('members').replaceChildren(...items);
  const count = r ? Math.max(r.room.memberCount, r.members.size) : 0;
  $('member-count').textContent = r ? `(${count})` : '';
  const more = count - names.length;
  const btn = $('more-members');
  btn.hidden = !(r && more > 0);
  btn.disabled = !!(r && r.loadingMembers);
  btn.textContent = `Show more (${more} more)`;
}

async function showMoreMembers() {
  const r = cur();
  if (!r || r.loadingMembers) return;
  const last = shownMembers(r).at(-1);
  r.shown += MEMBERS_PAGE;
  if (!r.room.membersComplete && last !== undefined) {
    r.loadingMembers = true;
    renderMembers();
    try {
      const page = await r.room.membersPage({ after: last, limit: MEMBERS_PAGE });
      for (const n of page.members) r.members.add(n);
    } catch (e) {
      showError(e.code, e.message);
    } finally {
      r.loadingMembers = false;
    }
  }
  if (r.name === S.current) renderMembers();
}

function renderTyping() {
  const r = cur();
  const users = r ? [...r.typing.keys()] : [];
  const t = $('typing');
  t.textContent = users.length === 0 ? ''
    : users.length === 1 ? `${users[0]} is typing…`
    : users.length === 2 ? `${users[0]} and ${users[1]} are typing…`
    : `${users.length} people are typing…`;
  t.hidden = users.length === 0;
}

function clearTyping(r, user) {
  if (!r.typing.has(user)) return;
  clearTimeout(r.typing.get(user));
  r.typing.delete(user);
  if (r.name === S.current) renderTyping();
}

function clearAllTyping(r) { for (const t of r.typing.values()) clearTimeout(t); r.typing.clear(); }

function showError(code, message) {
  $('error-code').textContent = code;
  $('error-message').textContent = message;
  $('error-banner').hidden = false;
}

// ---- Rooms: add, switch, leave ----------------------------------------
function addRoom(name) {
  let r = S.rooms.get(name);
  if (!r) {
    r = newRoom(name);
    r.el = renderRoomItem(r);
    r.room = S.client.room(name);
    S.rooms.set(name, r);
    $('room-list').append(r.el);
    watchRoom(r);
  }
  switchRoom(name);
}

function switchRoom(name) {
  const r = S.rooms.get(name);
  if (!r) return;
  Object.assign(S, { current: name, lastTyping: 0 });
  r.unread = 0;
  renderUnread(r);
  for (const x of S.rooms.values()) {
    x.el.classList.toggle('active', x === r);
    const btn = x.el.querySelector('.room-btn');
    if (x === r) btn.setAttribute('aria-current', 'true'); else btn.removeAttribute('aria-current');
  }
  renderRoom();
}

function leaveRoom(name, userAction = false) {
  const r = S.rooms.get(name);
  if (!r) return;
  S.rooms.delete(name);
  S.outbox = S.outbox.filter((e) => e.room !== name);
  r.room.leave();
  clearAllTyping(r);
  r.el.remove();
  if (S.current === name) {
    S.current = null;
    const next = S.rooms.keys().next().value;
    if (next) switchRoom(next); else renderRoom();
  }
  if (userAction) ($('room-list').querySelector('.room-btn') || $('new-room')).focus();
}

// ---- Views: start form, chat, mobile sidebar ---------------------------
function start(ev) {
  ev.preventDefault();
  const name = $('name').value.trim();
  const room = $('room').value.trim();
  const err = !USER_RE.test(name) ? ['name', 'Name: 1–32 letters, digits, spaces, _ - or .']
    : !ROOM_RE.test(room) ? ['room', 'Room: 1–64 of A–Z a–z 0–9 _ . : -'] : null;
  $('name').setAttribute('aria-invalid', String(!!err && err[0] === 'name'));
  $('room').setAttribute('aria-invalid', String(!!err && err[0] === 'room'));
  $('start-error').textContent = err ? err[1] : '';
  if (err) { $(err[0]).focus(); return; }
  store('name', name);
  store('room', room);
  Object.assign(S, { name, me: '', everConnected: false, failures: 0 });
  $('me').textContent = name;
  $('start-view').hidden = true;
  $('chat-view').hidden = false;
  setConn('offline');
  connect();
  addRoom(room);
  $('composer').focus();
}

function signOut() {
  const client = S.client;
  S.client = null; // detach first so the close is not treated as a drop
  client?.close();
  for (const r of S.rooms.values()) clearAllTyping(r);
  S.rooms.clear();
  Object.assign(S, { outbox: [], current: null });
  $('room-list').replaceChildren();
  setConn('offline');
  closeSidebar();
  $('error-banner').hidden = true;
  $('chat-view').hidden = true;
  $('start-view').hidden = false;
  $('name').focus();
}

function onAddRoom(ev) {
  ev.preventDefault();
  const input = $('new-room');
  const name = input.value.trim();
  const ok = ROOM_RE.test(name);
  $('new-room-error').textContent = ok ? '' : 'Use 1–64 of A–Z a–z 0–9 _ . : -';
  input.setAttribute('aria-invalid', String(!ok));
  if (!ok) { input.focus(); return; }
  input.value = '';
  addRoom(name);
  closeSidebar();
  $('composer').focus();
}

const sidebarOpen = () => document.body.classList.contains('sidebar-open');
function openSidebar() {
  document.body.classList.add('sidebar-open');
  $('menu-btn').setAttribute('aria-expanded', 'true');
  const active = $('room-list').querySelector('[aria-current]') || $('new-room');
  setTimeout(() => active.focus(), 0);
}
function closeSidebar() {
  if (!sidebarOpen()) return;
  document.body.classList.remove('sidebar-open');
  $('menu-btn').setAttribute('aria-expanded', 'false');
}

function autosize() {
  const ta = $('composer');
  ta.style.height = 'auto';
  ta.style.height = `${Math.min(ta.scrollHeight, 200)}px`;
}

// ---- Wiring ------------------------------------------------------------
function init() {
  $('name').value = load('name');
  $('room').value = load('room') || 'lobby';
  $('start-form').addEventListener('submit', start);
  $('add-room-form').addEventListener('submit', onAddRoom);
  $('composer-form').addEventListener('submit', (ev) => { ev.preventDefault(); sendMessage(); $('composer').focus(); });
  $('composer').addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); sendMessage(); }
  });
  $('composer').addEventListener('input', () => { autosize(); sendTyping(); });
  $('load-older').addEventListener('click', () => { // pages back from the lowest seq shown
    const r = cur();
    if (r && r.room.joined && r.msgs.length && !r.loadingOlder) requestHistory(r, { before: r.msgs[0].seq });
  });
  $('error-dismiss').addEventListener('click', () => { $('error-banner').hidden = true; });
  $('notice-dismiss').addEventListener('click', () => { if (cur()) cur().notice = ''; $('room-notice').hidden = true; });
  $('logout-btn').addEventListener('click', signOut);
  $('more-members').addEventListener('click', showMoreMembers);
  $('menu-btn').addEventListener('click', () => (sidebarOpen() ? closeSidebar() : openSidebar()));
  $('backdrop').addEventListener('click', closeSidebar);
  document.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape' && sidebarOpen()) { closeSidebar(); $('menu-btn').focus(); }
  });
  (load('name') ? $('join-btn') : $('name')).focus();
}

// ---- Test hook ---------------------------------------------------------
window.palaver = {
  state() {
    const rooms = {};
    for (const r of S.rooms.values()) {
      rooms[r.name] = {
        epoch: r.room.epoch ?? null, seq: r.room.seq, joined: r.room.joined, unread: r.unread,
        messages: r.msgs.map((m) => ({ seq: m.seq, id: m.id, user: m.user, text: m.text })),
        members: [...r.members].sort(),
        memberCount: r.room.memberCount, membersComplete: r.room.membersComplete,
        pending: S.outbox.filter((e) => e.room === r.name).map((e) => ({ id: e.id, text: e.text, status: e.status })),
      };
    }
    return { connection: S.connection, user: S.me, current: S.current, rooms };
  },
};

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
else init();
