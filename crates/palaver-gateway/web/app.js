// Palaver web client: one WebSocket, many rooms, no framework, no build step.
// All user-provided text goes into the DOM through textContent only.
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const ROOM_RE = /^[A-Za-z0-9_.:-]{1,64}$/;
  const USER_RE = /^[\p{L}\p{M}\p{N} _.-]{1,32}$/u;
  const PAGE = 50, TYPING_SEND_MS = 2000, TYPING_SHOW_MS = 3000, PING_MS = 20000, STALE_MS = 50000;
  const BACKOFF_MIN = 500, BACKOFF_MAX = 10000;

  // ---- State -------------------------------------------------------------
  const S = {
    name: '', me: '', connection: 'offline', ws: null, stopped: true,
    attempt: 0, timer: null, lastSent: 0, lastRecv: 0, lastTyping: 0, everConnected: false,
    rooms: new Map(), current: null, joinQueue: [],
    outbox: [], // pending sends: {id, room, text, ts, status: 'sending'|'failed', tries, el}
    idPrefix: Math.random().toString(36).slice(2, 10), idSeq: 0,
  };

  // Per-room state. `seq` is the last sequence number seen contiguously in `epoch`.
  function newRoom(name) {
    return {
      name, epoch: null, seq: 0, msgs: [], bySeq: new Map(), stale: [], members: new Set(),
      typing: new Map(), unread: 0, joined: false, loaded: false, olderMore: false,
      histQ: [], gapPending: false, notice: '', el: null,
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

  // ---- Connection: connect, reconnect with backoff + jitter, heartbeat ---
  function connect() {
    clearTimeout(S.timer);
    if (S.stopped) return;
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:'; // same host as the page
    let ws;
    // In token mode the page is opened as /?token=JWT; the token rides along to the socket.
    const token = new URLSearchParams(location.search).get('token');
    const auth = token ? `&token=${encodeURIComponent(token)}` : '';
    try { ws = new WebSocket(`${proto}//${location.host}/ws?name=${encodeURIComponent(S.name)}${auth}`); }
    catch { scheduleReconnect(); return; }
    S.ws = ws;
    ws.onopen = () => { S.lastRecv = Date.now(); };
    ws.onmessage = (ev) => { if (ws === S.ws) { S.lastRecv = Date.now(); handleFrame(ev.data); } };
    ws.onclose = (ev) => { if (ws === S.ws) onClosed(ev.code, ev.reason); };
  }

  // The socket is gone: forget per-connection state, then decide whether to retry.
  function onClosed(code, reason) {
    S.ws = null;
    S.joinQueue = [];
    for (const r of S.rooms.values()) {
      r.joined = false; r.histQ = []; r.gapPending = false;
      clearAllTyping(r);
    }
    renderTyping();
    if (code === 4001) {
      S.stopped = true;
      setConn('offline');
      showError('unauthorized', reason || 'The server refused this connection (4001). Sign out and try again.');
      return;
    }
    if (code === 1008) showError('policy', reason || 'Disconnected for sending too much too fast (1008).');
    if (code === 1009) showError('too_big', reason || 'A frame was too big for the server (1009).');
    if (S.stopped) { setConn('offline'); return; }
    scheduleReconnect(code === 1008 ? BACKOFF_MAX : 0);
  }

  function backoff(attempt) {
    const base = Math.min(BACKOFF_MAX, BACKOFF_MIN * 2 ** attempt);
    return base / 2 + Math.random() * base / 2; // "equal jitter"
  }

  function scheduleReconnect(min = 0) {
    if (!navigator.onLine) { setConn('offline'); return; } // the 'online' event resumes
    setConn('reconnecting');
    if (S.attempt === 3 && !S.everConnected) showError('unreachable', 'Cannot reach the chat server; still trying.');
    clearTimeout(S.timer);
    S.timer = setTimeout(connect, Math.max(min, backoff(S.attempt++)));
  }

  // Ping when idle; drop a connection that has gone silent (no pong either).
  function heartbeat() {
    const ws = S.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    const now = Date.now();
    if (now - S.lastRecv > STALE_MS) { ws.close(); onClosed(1006, ''); }
    else if (now - S.lastSent >= PING_MS) send({ type: 'ping' });
  }

  function send(frame) {
    if (!S.ws || S.ws.readyState !== WebSocket.OPEN) return false;
    S.ws.send(JSON.stringify(frame));
    return (S.lastSent = Date.now()) > 0;
  }

  function setConn(state) {
    S.connection = state;
    $('conn-state').textContent = state;
    $('conn-state').dataset.state = state;
  }

  // ---- Incoming frames ---------------------------------------------------
  const handlers = {
    welcome: onWelcome, joined: onJoined, left: () => {}, message: onMessage,
    presence: onPresence, presence_batch: onPresenceBatch, ack: onAck, history: onHistory, pong: () => {}, error: onError,
  };
  function handleFrame(data) {
    let f;
    try { f = JSON.parse(data); } catch { return; }
    if (f && handlers[f.type]) handlers[f.type](f);
  }

  // Connected: reset the backoff and (re)join every room, resuming where we left off.
  function onWelcome(f) {
    S.me = $('me').textContent = f.user;
    Object.assign(S, { attempt: 0, everConnected: true });
    setConn('connected');
    for (const r of S.rooms.values()) joinRoom(r);
  }

  function joinRoom(r) {
    const frame = { type: 'join', room: r.name };
    if (r.epoch !== null) {
      // The id of the message held at `seq` lets the server catch a Redis
      // that came back behind us (it then answers recovered: false).
      frame.since = { epoch: r.epoch, seq: r.seq };
      const held = r.bySeq.get(r.seq);
      if (held && held.id) frame.since.id = held.id;
    }
    if (send(frame)) S.joinQueue.push(r.name);
  }

  function onJoined(f) {
    const i = S.joinQueue.indexOf(f.room);
    if (i >= 0) S.joinQueue.splice(i, 1);
    const r = S.rooms.get(f.room);
    if (!r) return; // left while the join was in flight
    r.joined = true;
    r.members = new Set(f.members);
    if (r.epoch === null) { // first join: live messages follow `seq`; show the latest page
      Object.assign(r, { epoch: f.epoch, seq: f.seq });
      requestHistory(r, {});
    } else if (!f.recovered) {
      resetEpoch(r, f.epoch, f.seq);
    } else if (!r.loaded) {
      requestHistory(r, { before: r.seq + 1 }); // first page was lost with the old connection
    }
    flushOutbox(r.name);
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
    Object.assign(r, { epoch, seq });
    r.notice = 'Some messages may be missing.';
    requestHistory(r, { before: seq + 1 });
    if (r.name === S.current) renderRoom();
  }

  // A live or replayed message: drop what we have seen, fetch what we skipped.
  function onMessage(f) {
    const r = S.rooms.get(f.room);
    if (!r) return;
    if (f.epoch !== r.epoch) resetEpoch(r, f.epoch, f.seq - 1);
    if (f.seq <= r.seq) return;
    if (f.seq > r.seq + 1 && !r.gapPending) {
      r.gapPending = requestHistory(r, { after: r.seq });
    }
    keepScroll(() => ingest(r, f, true));
    advance(r);
  }

  function onAck(f) {
    const e = S.outbox.find((x) => x.id === f.id);
    const r = S.rooms.get(f.room);
    if (!e || !r) return;
    keepScroll(() => confirm(e, f.seq));
    advance(r);
  }

  function onHistory(f) {
    const r = S.rooms.get(f.room);
    if (!r) return;
    const dir = r.histQ.shift() || 'before';
    if (f.epoch !== r.epoch) { if (dir === 'after') r.gapPending = false; return; }
    keepScroll(() => { for (const m of f.messages) ingest(r, m, false); }, dir === 'before');
    if (dir === 'before') Object.assign(r, { loaded: true, olderMore: f.more });
    else if (f.more && f.messages.length) requestHistory(r, { after: f.messages.at(-1).seq }); // keep filling
    else { // gap filled; whatever is still missing is gone from the server too
      r.gapPending = false;
      r.seq = Math.max(r.seq, ...r.bySeq.keys());
    }
    advance(r);
    if (r.name === S.current) renderOlder();
  }

  function onPresence(f) {
    const r = S.rooms.get(f.room);
    if (!r) return;
    if (f.state === 'join') r.members.add(f.user);
    if (f.state === 'leave') { r.members.delete(f.user); clearTyping(r, f.user); }
    if (f.state === 'typing' && f.user !== S.me) {
      clearTimeout(r.typing.get(f.user));
      r.typing.set(f.user, setTimeout(() => clearTyping(r, f.user), TYPING_SHOW_MS));
    }
    if (r.name === S.current) { renderMembers(); renderTyping(); }
  }

  // Big rooms send presence coalesced: apply it as the single events it stands for.
  function onPresenceBatch(f) {
    for (const user of f.joined) onPresence({ room: f.room, user, state: 'join' });
    for (const user of f.left) onPresence({ room: f.room, user, state: 'leave' });
    for (const user of f.typing) onPresence({ room: f.room, user, state: 'typing' });
  }

  // Errors: always shown; retryable sends go back to the outbox, others fail.
  function onError(f) {
    const e = f.ref && S.outbox.find((x) => x.id === f.ref);
    showError(f.code, f.message + (e && f.retryable ? ' (will retry)' : ''));
    if (e) {
      if (f.retryable) {
        const delay = backoff(e.tries++);
        setTimeout(() => { if (S.outbox.includes(e) && e.status === 'sending') transmit(e); }, delay);
      } else {
        e.status = 'failed';
        setStatus(e.el, 'failed', e);
      }
    } else if (f.ref === 'join') {
      const r = S.rooms.get(S.joinQueue.shift());
      if (r && !r.joined) {
        if (f.retryable) setTimeout(() => { if (S.rooms.get(r.name) === r && !r.joined) joinRoom(r); }, 2000);
        else leaveRoom(r.name);
      }
    } else if (f.ref === 'history') {
      for (const r of S.rooms.values()) { r.histQ = []; r.gapPending = false; }
    }
  }

  // ---- Room message bookkeeping -----------------------------------------
  function requestHistory(r, query) {
    const kind = 'after' in query ? 'after' : 'before';
    if (!send({ type: 'history', room: r.name, ...query, limit: PAGE })) return false;
    r.histQ.push(kind);
    return true;
  }

  // Advance `seq` over messages already held (from acks or history pages).
  function advance(r) { while (r.bySeq.has(r.seq + 1)) r.seq++; }

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

  // Our pending message got its sequence number (from `ack` or its echo).
  function confirm(e, seq, ts) {
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

  // ---- Sending: outbox with stable ids ----------------------------------
  function sendMessage() {
    const ta = $('composer');
    const text = ta.value.replace(/^\n+/, '').replace(/\s+$/, '');
    const r = cur();
    if (!r || !text.trim()) return;
    const e = { id: `${S.idPrefix}-${++S.idSeq}`, room: r.name, text, ts: Date.now(), status: 'sending', tries: 0 };
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
    if (r && r.joined) send({ type: 'send', room: e.room, text: e.text, id: e.id });
  }

  function flushOutbox(room) {
    for (const e of S.outbox) if (e.room === room && e.status === 'sending') transmit(e);
  }

  function retry(e) {
    Object.assign(e, { status: 'sending', tries: 0 });
    setStatus(e.el, 'sending', e);
    transmit(e);
  }

  function sendTyping() {
    const r = cur();
    if (!r || !r.joined || !$('composer').value.trim()) return;
    if (Date.now() - S.lastTyping < TYPING_SEND_MS) return;
    if (send({ type: 'typing', room: r.name })) S.lastTyping = Date.now();
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

  function renderMembers() {
    const r = cur();
    const names = r ? [...r.members].sort((a, b) => a.localeCompare(b)) : [];
    const items = names.map((n) => {
      const li = el('li', 'member', n);
      li.dataset.user = n;
      if (n === S.me) { li.classList.add('own'); li.append(el('span', 'you', ' (you)')); }
      return li;
    });
    $('members').replaceChildren(...items);
    $('member-count').textContent = r ? `(${names.length})` : '';
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
      S.rooms.set(name, r);
      $('room-list').append(r.el);
      if (S.connection === 'connected') joinRoom(r);
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
    if (r.joined || S.joinQueue.includes(name)) send({ type: 'leave', room: name });
    clearAllTyping(r);
    S.outbox = S.outbox.filter((e) => e.room !== name);
    S.rooms.delete(name);
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
    Object.assign(S, { name, me: '', stopped: false, attempt: 0, everConnected: false });
    $('me').textContent = name;
    $('start-view').hidden = true;
    $('chat-view').hidden = false;
    addRoom(room);
    setConn('offline');
    connect();
    $('composer').focus();
  }

  function signOut() {
    S.stopped = true;
    clearTimeout(S.timer);
    const ws = S.ws;
    S.ws = null; // detach first so the close is not treated as a drop
    ws?.close(1000, 'bye');
    for (const r of S.rooms.values()) clearAllTyping(r);
    S.rooms.clear();
    Object.assign(S, { outbox: [], joinQueue: [], current: null });
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
      if (r && r.joined && r.msgs.length && !r.histQ.includes('before')) requestHistory(r, { before: r.msgs[0].seq });
    });
    $('error-dismiss').addEventListener('click', () => { $('error-banner').hidden = true; });
    $('notice-dismiss').addEventListener('click', () => { if (cur()) cur().notice = ''; $('room-notice').hidden = true; });
    $('logout-btn').addEventListener('click', signOut);
    $('menu-btn').addEventListener('click', () => (sidebarOpen() ? closeSidebar() : openSidebar()));
    $('backdrop').addEventListener('click', closeSidebar);
    document.addEventListener('keydown', (ev) => {
      if (ev.key === 'Escape' && sidebarOpen()) { closeSidebar(); $('menu-btn').focus(); }
    });
    window.addEventListener('online', () => { if (!S.stopped && !S.ws) { S.attempt = 0; connect(); } });
    window.addEventListener('offline', () => { if (!S.ws) setConn('offline'); });
    setInterval(heartbeat, 5000);
    (load('name') ? $('join-btn') : $('name')).focus();
  }

  // ---- Test hook ---------------------------------------------------------
  window.palaver = {
    state() {
      const rooms = {};
      for (const r of S.rooms.values()) {
        rooms[r.name] = {
          epoch: r.epoch, seq: r.seq, joined: r.joined, unread: r.unread,
          messages: r.msgs.map((m) => ({ seq: m.seq, id: m.id, user: m.user, text: m.text })),
          members: [...r.members].sort(),
          pending: S.outbox.filter((e) => e.room === r.name).map((e) => ({ id: e.id, text: e.text, status: e.status })),
        };
      }
      return { connection: S.connection, user: S.me, current: S.current, rooms };
    },
  };

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
