// palaver-client, bundled for the web chat by `npm run bundle` in clients/js. Do not edit: edit clients/js/src.

// src/backoff.ts
function fullJitter(attempt, minDelay, maxDelay, random = Math.random) {
  return random() * backoffCeiling(attempt, minDelay, maxDelay);
}
function backoffCeiling(attempt, minDelay, maxDelay) {
  return Math.min(maxDelay, minDelay * 2 ** Math.min(attempt, 30));
}

// src/emitter.ts
var Emitter = class {
  listeners = /* @__PURE__ */ new Map();
  /** Calls `listener` on every `event`; returns a function that unsubscribes. */
  on(event, listener) {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, set = /* @__PURE__ */ new Set());
    set.add(listener);
    return () => this.off(event, listener);
  }
  /** Calls `listener` on the next `event` only. */
  once(event, listener) {
    const off = this.on(event, (payload) => {
      off();
      listener(payload);
    });
    return off;
  }
  /** Removes a listener added with `on`. */
  off(event, listener) {
    this.listeners.get(event)?.delete(listener);
  }
  /** Calls every listener of `event`. A throwing listener cannot break the client's bookkeeping: its error is rethrown on its own. */
  emit(event, payload) {
    const set = this.listeners.get(event);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        listener(payload);
      } catch (e) {
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }
};

// src/errors.ts
var PalaverError = class extends Error {
  /** Stable code: the server's error code, or one of the client's. */
  code;
  /** Whether trying again later can succeed. */
  retryable;
  /** The request the server's error refers to (a message id or a frame type). */
  ref;
  constructor(code, message, retryable = false, ref) {
    super(message);
    this.name = "PalaverError";
    this.code = code;
    this.retryable = retryable;
    this.ref = ref;
  }
};

// src/ids.ts
function messageId() {
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

// src/pacer.ts
var Pacer = class {
  constructor(initial, write) {
    this.initial = initial;
    this.write = write;
    this.rate = initial.perSecond;
    this.tokens = initial.burst;
  }
  initial;
  write;
  rate;
  tokens;
  last = Date.now();
  slowedAt = 0;
  queue = [];
  timer;
  /** Queues a frame; it is written now if the bucket allows. */
  push(data) {
    this.queue.push(data);
    this.pump();
  }
  /** The server refused a frame: write nothing for a while and go slower. */
  slowDown() {
    const now = Date.now();
    if (now - this.slowedAt >= 1e3) {
      this.rate = Math.max(1, this.rate / 2);
      this.slowedAt = now;
    }
    this.refill();
    this.tokens = 0;
  }
  /** Drops what is queued and restores the pace (a new connection has a new budget). */
  reset() {
    clearTimeout(this.timer);
    this.timer = void 0;
    this.queue = [];
    this.rate = this.initial.perSecond;
    this.tokens = this.initial.burst;
    this.last = Date.now();
  }
  refill() {
    const now = Date.now();
    this.tokens = Math.min(this.initial.burst, this.tokens + (now - this.last) / 1e3 * this.rate);
    this.last = now;
  }
  pump() {
    this.refill();
    while (this.queue.length > 0 && this.tokens >= 1) {
      this.tokens -= 1;
      this.write(this.queue.shift());
    }
    if (this.queue.length > 0 && this.timer === void 0) {
      const wait = Math.ceil((1 - this.tokens) / this.rate * 1e3);
      this.timer = setTimeout(() => {
        this.timer = void 0;
        this.pump();
      }, wait);
    }
  }
};

// src/protocol.ts
var ROOM_NAME = /^[A-Za-z0-9_.:-]{1,64}$/;
var Close = {
  Normal: 1e3,
  GoingAway: 1001,
  ProtocolError: 1002,
  InvalidPayload: 1007,
  PolicyViolation: 1008,
  TooBig: 1009,
  InternalError: 1011,
  SlowConsumer: 1013,
  HeartbeatTimeout: 4e3,
  Unauthorized: 4001
};

// src/room.ts
var GAP_PAGE = 200;
var Room = class extends Emitter {
  /** @internal */
  constructor(name, link, store) {
    super();
    this.link = link;
    this.store = store;
    this.name = name;
    this.position = store.load(name);
  }
  link;
  store;
  /** The room's name. */
  name;
  position;
  wanted = false;
  live = false;
  memberSet = /* @__PURE__ */ new Set();
  count = 0;
  complete = true;
  joinWaiters = [];
  /** Messages that arrived past a gap, held until history fills it. */
  held = /* @__PURE__ */ new Map();
  filling = false;
  /** Bumped whenever the stream restarts, so a stale gap fill is ignored. */
  stream = 0;
  lastTyping = 0;
  lastJoined;
  /** Joined on the current connection: messages are flowing. */
  get joined() {
    return this.live;
  }
  /**
   * Users present in the room (sorted), as of `joined` plus presence since:
   * the whole list in a small room, the ones known so far in a big one (see
   * `membersComplete`).
   */
  get members() {
    return [...this.memberSet].sort();
  }
  /** How many users are present on every node (from the server, kept current by presence). */
  get memberCount() {
    return this.count;
  }
  /** Whether `members` is the whole list (false in a big room: page with `membersPage`). */
  get membersComplete() {
    return this.complete;
  }
  /**
   * A page of the room's members by name, read from the server (the room must
   * be joined). Page on with `after` set to the last name of the previous page.
   * Users it returns are added to `members`.
   */
  async membersPage(query = {}) {
    if (!this.live) throw new PalaverError("not_joined", `${this.name} is not joined`, true);
    const page = await this.link.members(this.name, query);
    for (const user of page.members) this.memberSet.add(user);
    if (query.after === void 0 && !page.more && this.memberSet.size === page.members.length) this.complete = true;
    return { room: this.name, members: page.members, more: page.more };
  }
  /** The epoch of the messages delivered, once known. */
  get epoch() {
    return this.position?.epoch;
  }
  /** The seq of the last message delivered (or of the room's head at the join). */
  get seq() {
    return this.position?.seq ?? 0;
  }
  /**
   * Enters the room (connecting the client if needed) and keeps it joined across
   * reconnects, resuming with `since`. Resolves on the first `joined`.
   */
  join() {
    if (this.live && this.lastJoined) return Promise.resolve(this.lastJoined);
    const joined = new Promise((resolve, reject) => this.joinWaiters.push({ resolve, reject }));
    if (!this.wanted) {
      this.wanted = true;
      if (this.link.connected) this.sendJoin();
      else this.link.connect();
    }
    return joined;
  }
  /**
   * Leaves the room and forgets it: pending sends are rejected and its saved
   * position is dropped. `client.room(name)` afterwards is a fresh room.
   */
  leave() {
    if (this.wanted && this.link.connected) this.link.frame({ type: "leave", room: this.name });
    this.wanted = false;
    this.live = false;
    this.stream++;
    this.held.clear();
    this.filling = false;
    this.failJoin(new PalaverError("left", `left ${this.name}`));
    this.link.dropSends(this.name, new PalaverError("left", `left ${this.name} before the message was sent`));
    this.position = void 0;
    this.link.forget(this);
  }
  /**
   * Sends a message. Resolves with the server's ack once it is stored; retried
   * with the same id through reconnects and retryable errors until then or the
   * client's `sendTimeout`. Pass your own `id` (see `messageId`) to recognise
   * the message when it comes back, or to retry one that timed out.
   */
  send(text, options = {}) {
    if (!this.wanted) return Promise.reject(new PalaverError("not_joined", `join ${this.name} first`));
    return this.link.send(this.name, text, options.id);
  }
  /** A page of the room's history (the room must be joined). */
  async history(query = {}) {
    if (!this.live) throw new PalaverError("not_joined", `${this.name} is not joined`, true);
    const page = await this.link.history(this.name, query);
    return { room: this.name, epoch: page.epoch, messages: page.messages.map((m) => this.toMessage(page.epoch, m)), more: page.more };
  }
  /** Tells the members that this user is typing (at most once a second). */
  typing() {
    const now = Date.now();
    if (!this.live || now - this.lastTyping < 1e3) return;
    this.lastTyping = now;
    this.link.frame({ type: "typing", room: this.name });
  }
  // ---- Called by the client ----------------------------------------------
  /** @internal Whether the application wants the room joined. */
  get isWanted() {
    return this.wanted;
  }
  /** @internal A new connection is up: join, resuming from the position held. */
  sendJoin() {
    const frame = { type: "join", room: this.name };
    const p = this.position;
    if (p) frame.since = p.id !== void 0 && p.seq > 0 ? { epoch: p.epoch, seq: p.seq, id: p.id } : { epoch: p.epoch, seq: p.seq };
    this.link.frame(frame);
    this.link.awaitJoined(this.name);
  }
  /** @internal The connection is gone. */
  connectionLost() {
    this.live = false;
    this.stream++;
    this.held.clear();
    this.filling = false;
  }
  /** @internal The client stopped: whoever awaits the join hears why. */
  clientStopped(error) {
    this.failJoin(error);
  }
  /** @internal `joined`, requested or not: the server restarts the stream. */
  onJoined(f) {
    if (!this.wanted) return;
    this.live = true;
    this.stream++;
    this.held.clear();
    this.filling = false;
    this.memberSet = new Set(f.members);
    this.count = f.member_count ?? f.members.length;
    this.complete = !f.members_more;
    const p = this.position;
    if (!p || !f.recovered || p.epoch !== f.epoch) this.moveTo({ epoch: f.epoch, seq: f.seq });
    const joined = {
      room: this.name,
      epoch: f.epoch,
      seq: f.seq,
      members: [...f.members].sort(),
      memberCount: this.count,
      membersMore: !this.complete,
      recovered: f.recovered
    };
    this.lastJoined = joined;
    for (const w of this.joinWaiters.splice(0)) w.resolve(joined);
    this.emit("joined", joined);
    this.membersChanged();
  }
  /** @internal The join was refused. */
  onJoinRefused(error) {
    this.wanted = false;
    this.live = false;
    this.failJoin(error);
    this.link.dropSends(this.name, error);
    this.emit("error", error);
  }
  /** @internal A live or replayed message: drop what was delivered, fill what was skipped. */
  onMessage(f) {
    if (!this.live) return;
    const m = this.toMessage(f.epoch, f);
    const p = this.position;
    if (!p || p.epoch !== m.epoch) {
      this.stream++;
      this.held.clear();
      this.filling = false;
      this.moveTo({ epoch: m.epoch, seq: m.seq - 1 });
    }
    this.accept(m);
  }
  /** @internal One change, as it happens (a small room). */
  onPresence(user, state) {
    if (!this.live) return;
    this.apply(user, state);
    if (state === "join") this.count++;
    if (state === "leave") this.count = Math.max(0, this.count - 1);
    if (state !== "typing") this.membersChanged();
  }
  /** @internal Changes of a big room, coalesced: apply `joined`, then `left`; the count is the server's. */
  onPresenceBatch(f) {
    if (!this.live) return;
    for (const user of f.joined) this.apply(user, "join");
    for (const user of f.left) this.apply(user, "leave");
    for (const user of f.typing) this.apply(user, "typing");
    if (f.member_count !== void 0) this.count = f.member_count;
    if (f.truncated) this.complete = false;
    if (f.joined.length > 0 || f.left.length > 0 || f.member_count !== void 0) this.membersChanged();
  }
  apply(user, state) {
    if (state === "join") this.memberSet.add(user);
    if (state === "leave") this.memberSet.delete(user);
    this.emit("presence", { room: this.name, user, state });
  }
  membersChanged() {
    this.emit("members", { room: this.name, count: this.count, complete: this.complete });
  }
  /** @internal An error about this room: a refused request, or a send's retryable error (it is retried). */
  onError(error) {
    this.emit("error", error);
  }
  // ---- Ordering ------------------------------------------------------------
  accept(m) {
    if (m.seq <= this.seq) return;
    if (this.filling || m.seq > this.seq + 1) {
      this.held.set(m.seq, m);
      if (!this.filling) void this.fill();
      return;
    }
    this.deliver(m);
    this.drainHeld();
  }
  deliver(m) {
    this.moveTo({ epoch: m.epoch, seq: m.seq, id: m.id });
    this.emit("message", m);
  }
  drainHeld() {
    for (; ; ) {
      const next = this.held.get(this.seq + 1);
      if (!next) break;
      this.held.delete(next.seq);
      this.deliver(next);
    }
  }
  /** Reads history after the last delivered seq until the held messages connect. */
  async fill() {
    const stream = this.stream;
    this.filling = true;
    try {
      for (; ; ) {
        const page = await this.link.history(this.name, { after: this.seq, limit: GAP_PAGE });
        if (stream !== this.stream) return;
        if (page.epoch !== this.epoch) break;
        const before = this.seq;
        for (const entry of page.messages) {
          if (entry.seq <= this.seq) continue;
          if (entry.seq > this.seq + 1) this.skipTo(entry.seq - 1);
          this.held.delete(entry.seq);
          this.deliver(this.toMessage(page.epoch, entry));
        }
        this.drainHeld();
        if (this.held.size === 0 || !page.more || this.seq === before) break;
      }
    } catch (e) {
      if (stream !== this.stream) return;
      this.emit("error", e instanceof PalaverError ? e : new PalaverError("internal", String(e)));
    }
    if (stream !== this.stream) return;
    this.filling = false;
    this.drainHeld();
    if (this.held.size > 0) {
      this.skipTo(Math.min(...this.held.keys()) - 1);
      this.drainHeld();
    }
  }
  /** What is missing up to `seq` is gone from the server too: say so, go on after it. */
  skipTo(seq) {
    const epoch = this.epoch;
    this.emit("gap", { room: this.name, epoch, from: this.seq + 1, to: seq });
    this.moveTo({ epoch, seq });
  }
  moveTo(p) {
    this.position = p;
    this.store.save(this.name, p);
  }
  failJoin(error) {
    for (const w of this.joinWaiters.splice(0)) w.reject(error);
  }
  toMessage(epoch, m) {
    return { room: this.name, epoch, seq: m.seq, id: m.id, user: m.user, text: m.text, ts: m.ts };
  }
};

// src/storage.ts
var PositionStore = class {
  constructor(storage, prefix) {
    this.storage = storage;
    this.prefix = prefix;
  }
  storage;
  prefix;
  load(room) {
    if (!this.storage) return void 0;
    try {
      const raw = this.storage.getItem(this.key(room));
      if (!raw) return void 0;
      const p = JSON.parse(raw);
      if (typeof p.epoch !== "string" || typeof p.seq !== "number" || !Number.isSafeInteger(p.seq) || p.seq < 0) return void 0;
      return typeof p.id === "string" ? { epoch: p.epoch, seq: p.seq, id: p.id } : { epoch: p.epoch, seq: p.seq };
    } catch {
      return void 0;
    }
  }
  save(room, position) {
    if (!this.storage) return;
    try {
      this.storage.setItem(this.key(room), JSON.stringify(position));
    } catch {
    }
  }
  forget(room) {
    if (!this.storage) return;
    try {
      this.storage.removeItem(this.key(room));
    } catch {
    }
  }
  key(room) {
    return `${this.prefix}:${room}`;
  }
};

// src/client.ts
var DEFAULTS = {
  minDelay: 500,
  maxDelay: 1e4,
  policyDelay: 6e4,
  pingInterval: 1e4,
  pongTimeout: 5e3,
  sendTimeout: 6e4,
  tokenIn: "url",
  storageKey: "palaver",
  rate: { perSecond: 16, burst: 20 },
  maxFrame: 16384
};
var FATAL_CLOSES = [Close.ProtocolError, Close.InvalidPayload, Close.TooBig];
var Palaver = class extends Emitter {
  url;
  credentials;
  options;
  WS;
  store;
  rooms = /* @__PURE__ */ new Map();
  outbox = /* @__PURE__ */ new Map();
  joinQueue = [];
  historyQueue = [];
  membersQueue = [];
  ws;
  pacer;
  current = "disconnected";
  welcome;
  wanted = false;
  attempt = 0;
  /** Bumped for every socket, so stale callbacks and timers know they are stale. */
  generation = 0;
  reconnectTimer;
  heartbeat;
  lastHeard = 0;
  lastPing = 0;
  token;
  failedBeforeWelcome = 0;
  onOnline = () => {
    if (this.wanted && !this.ws) {
      this.attempt = 0;
      this.open();
    }
  };
  onOffline = () => {
    if (this.ws) this.abandon(this.ws, 1006, "the browser went offline");
  };
  constructor(url, credentials = {}, options = {}) {
    super();
    this.url = socketUrl(url);
    this.credentials = credentials;
    const watchOnline = options.watchOnline ?? hasOnlineEvents();
    this.options = { ...DEFAULTS, ...definedOnly(options), watchOnline };
    const WS = options.WebSocket ?? globalThis.WebSocket;
    if (!WS) throw new TypeError('no WebSocket implementation: pass { WebSocket } (e.g. from the "ws" package) on Node 20');
    this.WS = WS;
    this.store = new PositionStore(options.storage, this.options.storageKey);
    this.pacer = new Pacer(this.options.rate, (data) => this.ws?.send(data));
  }
  /** The connection's state. */
  get state() {
    return this.current;
  }
  /** The user name the server gave this connection (from `welcome`), once connected. */
  get user() {
    return this.welcome?.user;
  }
  /** The serving node's id and the session id, once connected. */
  get session() {
    return this.welcome;
  }
  /** The room called `name` (created on first use; joined with `room.join()`). */
  room(name) {
    if (!ROOM_NAME.test(name)) throw new TypeError(`invalid room name ${JSON.stringify(name)}: 1–64 of A–Z a–z 0–9 _ . : -`);
    let room = this.rooms.get(name);
    if (!room) {
      room = new Room(name, this.link, this.store);
      this.rooms.set(name, room);
    }
    return room;
  }
  /** Starts connecting (joining a room does it too). */
  connect() {
    if (this.wanted) return;
    this.wanted = true;
    this.attempt = 0;
    if (this.options.watchOnline) {
      scope.addEventListener?.("online", this.onOnline);
      scope.addEventListener?.("offline", this.onOffline);
    }
    this.open();
  }
  /** Closes the connection for good; pending sends and history requests are rejected. */
  close() {
    this.stop(Close.Normal, "closed by the application");
  }
  // ---- Connecting -------------------------------------------------------------
  async open() {
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = void 0;
    if (!this.wanted || this.ws) return;
    if (isOffline()) {
      this.setDisconnected({ code: 1006, reason: "offline", willReconnect: true });
      return;
    }
    const generation = ++this.generation;
    this.setState("connecting");
    this.emit("connecting", { attempt: this.attempt });
    let url;
    try {
      const token = await this.currentToken();
      if (generation !== this.generation || !this.wanted) return;
      if (token === null) {
        this.stop(Close.Unauthorized, "getToken returned no token", new PalaverError("unauthorized", "getToken returned no token: signed out"));
        return;
      }
      url = this.connectUrl(token);
    } catch (e) {
      if (generation !== this.generation || !this.wanted) return;
      this.emit("error", new PalaverError("token_unavailable", `getToken failed: ${String(e)}`, true));
      this.scheduleReconnect(1006, "getToken failed");
      return;
    }
    let ws;
    try {
      ws = new this.WS(url);
    } catch (e) {
      this.stop(1006, String(e), new PalaverError("invalid_url", `cannot open ${url}: ${String(e)}`));
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.lastHeard = Date.now();
      if (this.options.tokenIn === "frame" && this.token) ws.send(JSON.stringify({ type: "auth", token: this.token }));
      this.startHeartbeat(ws);
    };
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      this.lastHeard = Date.now();
      if (typeof ev.data === "string") this.onFrame(ev.data);
    };
    ws.onclose = (ev) => {
      if (this.ws === ws) this.drop(ws, ev.code, ev.reason);
    };
    ws.onerror = () => {
    };
  }
  /** `undefined`: no token needed; `null`: signed out. */
  async currentToken() {
    const { getToken } = this.credentials;
    if (!getToken) return void 0;
    if (this.token === void 0 || tokenExpired(this.token)) {
      const token = await getToken();
      this.token = token ?? void 0;
      if (token === null || token === void 0) return null;
    }
    return this.token;
  }
  connectUrl(token) {
    const u = new URL(this.url);
    if (this.credentials.name) u.searchParams.set("name", this.credentials.name);
    if (token !== void 0 && this.options.tokenIn === "url") u.searchParams.set("token", token);
    return u.toString();
  }
  /** The socket closed (or was found dead): forget per-connection state and decide what next. */
  drop(ws, code, reason) {
    const welcomed = this.current === "connected";
    this.detach(ws);
    this.connectionLost();
    if (!welcomed) this.failedBeforeWelcome++;
    if (code === Close.Unauthorized) {
      if (!this.credentials.getToken) {
        this.stop(code, reason, new PalaverError("unauthorized", reason || "the server wants a token (close 4001)"));
        return;
      }
      this.token = void 0;
    } else if (this.credentials.getToken && this.failedBeforeWelcome >= 3) {
      this.token = void 0;
      this.failedBeforeWelcome = 0;
    }
    if (FATAL_CLOSES.includes(code)) {
      this.stop(code, reason, new PalaverError(`closed_${code}`, `the server closed the connection with ${code}${reason ? `: ${reason}` : ""}; not reconnecting`));
      return;
    }
    if (code === Close.PolicyViolation) {
      this.emit("error", new PalaverError("closed_1008", `the server closed the connection for flooding${reason ? `: ${reason}` : ""}; backing off`, true));
      this.scheduleReconnect(code, reason, this.options.policyDelay);
      return;
    }
    this.scheduleReconnect(code, reason);
  }
  scheduleReconnect(code, reason, atLeast = 0) {
    if (!this.wanted) return;
    if (isOffline()) {
      this.setDisconnected({ code, reason, willReconnect: true });
      return;
    }
    const delay = atLeast + fullJitter(this.attempt, this.options.minDelay, this.options.maxDelay);
    this.attempt++;
    this.setDisconnected({ code, reason, willReconnect: true, delay });
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => void this.open(), delay);
  }
  /** Ends the connection and every pending request; reconnects only on `connect()`. */
  stop(code, reason, error) {
    this.wanted = false;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = void 0;
    this.generation++;
    scope.removeEventListener?.("online", this.onOnline);
    scope.removeEventListener?.("offline", this.onOffline);
    const ws = this.ws;
    if (ws) {
      this.detach(ws);
      try {
        ws.close(Close.Normal, "bye");
      } catch {
      }
    }
    this.connectionLost();
    const why = error ?? new PalaverError("closed", reason);
    for (const p of [...this.outbox.values()]) this.settle(p, why);
    for (const room of this.rooms.values()) room.clientStopped(why);
    if (error) this.emit("error", error);
    this.setDisconnected({ code, reason, willReconnect: false });
  }
  detach(ws) {
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    if (this.ws === ws) this.ws = void 0;
    clearInterval(this.heartbeat);
    this.heartbeat = void 0;
  }
  /** Per-connection state goes: the pace, replies awaited, rooms' liveness. */
  connectionLost() {
    this.welcome = void 0;
    this.pacer.reset();
    this.joinQueue = [];
    const lost = new PalaverError("disconnected", "the connection was lost", true);
    for (const h of this.historyQueue.splice(0)) h.reject(lost);
    for (const m of this.membersQueue.splice(0)) m.reject(lost);
    for (const room of this.rooms.values()) room.connectionLost();
    for (const p of this.outbox.values()) {
      clearTimeout(p.retry);
      p.retry = void 0;
    }
  }
  /** Gives up on a socket believed dead: closes it without waiting for the handshake, then reconnects. */
  abandon(ws, code, reason) {
    try {
      const terminate = ws.terminate;
      if (terminate) terminate.call(ws);
      else ws.close(Close.HeartbeatTimeout, reason.slice(0, 100));
    } catch {
    }
    this.drop(ws, code, reason);
  }
  /** Pings when the server has been quiet; declares the link dead when even the ping gets no answer. */
  startHeartbeat(ws) {
    const { pingInterval, pongTimeout } = this.options;
    clearInterval(this.heartbeat);
    this.heartbeat = setInterval(() => {
      if (this.ws !== ws) return;
      const now = Date.now();
      const quiet = now - this.lastHeard;
      if (quiet >= pingInterval + pongTimeout) {
        this.abandon(ws, Close.HeartbeatTimeout, "no reply from the server (heartbeat timeout)");
      } else if (quiet >= pingInterval && now - this.lastPing >= pingInterval && this.current === "connected") {
        this.lastPing = now;
        this.write({ type: "ping" });
      }
    }, Math.max(50, Math.min(pingInterval, pongTimeout) / 4));
  }
  setState(state, disconnect) {
    this.current = state;
    this.emit("state", disconnect ? { state, disconnect } : { state });
  }
  setDisconnected(d) {
    this.setState("disconnected", d);
    this.emit("disconnected", d);
  }
  // ---- Frames -----------------------------------------------------------------
  write(frame) {
    if (this.ws && this.current === "connected") this.pacer.push(JSON.stringify(frame));
  }
  onFrame(data) {
    let f;
    try {
      f = JSON.parse(data);
    } catch {
      return;
    }
    switch (f.type) {
      case "welcome":
        return this.onWelcome(f);
      case "joined": {
        const i = this.joinQueue.indexOf(f.room);
        if (i >= 0) this.joinQueue.splice(i, 1);
        const room = this.rooms.get(f.room);
        if (!room) return;
        room.onJoined(f);
        this.flushOutbox(f.room);
        return;
      }
      case "message":
        return this.rooms.get(f.room)?.onMessage(f);
      case "presence":
        return this.rooms.get(f.room)?.onPresence(f.user, f.state);
      case "presence_batch":
        return this.rooms.get(f.room)?.onPresenceBatch(f);
      case "ack": {
        const p = this.outbox.get(f.id);
        if (p && p.room === f.room) this.settle(p, { id: f.id, room: f.room, seq: f.seq, duplicate: f.duplicate });
        return;
      }
      case "history":
        this.historyQueue.shift()?.resolve(f);
        return;
      case "members":
        this.membersQueue.shift()?.resolve(f);
        return;
      case "error":
        return this.onError(f);
      default:
        return;
    }
  }
  onWelcome(f) {
    this.welcome = { session: f.session, node: f.node, user: f.user, protocol: f.protocol };
    this.attempt = 0;
    this.failedBeforeWelcome = 0;
    this.setState("connected");
    this.emit("connected", this.welcome);
    for (const room of this.rooms.values()) if (room.isWanted) room.sendJoin();
  }
  /** Errors go to the request they name (a send's id, or the oldest join/history awaiting a reply). */
  onError(f) {
    const error = new PalaverError(f.code, f.message, f.retryable, f.ref);
    if (f.code === "rate_limited") this.pacer.slowDown();
    const generation = this.generation;
    const later = (tries, fn) => setTimeout(() => {
      if (generation === this.generation && this.current === "connected") fn();
    }, this.retryDelay(tries, f.code));
    const send = f.ref !== void 0 ? this.outbox.get(f.ref) : void 0;
    if (send) {
      if (!f.retryable) return this.settle(send, error);
      this.rooms.get(send.room)?.onError(error);
      send.connection = 0;
      clearTimeout(send.retry);
      send.retry = setTimeout(() => {
        send.retry = void 0;
        if (generation === this.generation) this.transmit(send);
      }, this.retryDelay(send.tries++, f.code));
      return;
    }
    if (f.ref === "join") {
      const name = this.joinQueue.shift();
      const room = name !== void 0 ? this.rooms.get(name) : void 0;
      if (!room || !room.isWanted) return;
      if (f.retryable) later(this.attempt, () => room.isWanted && !room.joined && room.sendJoin());
      else room.onJoinRefused(error);
      return;
    }
    if (f.ref === "history") {
      const h = this.historyQueue.shift();
      if (!h) return;
      if (!f.retryable || h.tries >= 5) return h.reject(error);
      later(h.tries++, () => this.requestHistory(h));
      return;
    }
    if (f.ref === "members") {
      const m = this.membersQueue.shift();
      if (!m) return;
      if (!f.retryable || m.tries >= 5) return m.reject(error);
      later(m.tries++, () => this.requestMembers(m));
      return;
    }
    if (f.ref === "typing" || f.ref === "ping" || f.ref === "leave") return;
    this.emit("error", error);
  }
  /** Backoff before retrying a refused request; `rate_limited` also waits for the server's budget to refill. */
  retryDelay(tries, code) {
    return fullJitter(tries, this.options.minDelay, this.options.maxDelay) + (code === "rate_limited" ? 1e3 : 0);
  }
  // ---- Sending ----------------------------------------------------------------
  submit(room, text, id = messageId()) {
    if (!this.wanted) return Promise.reject(new PalaverError("closed", "the client is closed: connect() first"));
    const existing = this.outbox.get(id);
    if (existing) return existing.promise;
    const bytes = new TextEncoder().encode(JSON.stringify({ type: "send", room, text, id })).length;
    if (bytes > this.options.maxFrame) {
      return Promise.reject(new PalaverError("frame_too_large", `the message is ${bytes} bytes encoded; the limit is ${this.options.maxFrame}`));
    }
    let resolve;
    let reject;
    const promise = new Promise((res, rej) => {
      resolve = res;
      reject = rej;
    });
    const p = { id, room, text, promise, resolve, reject, deadline: void 0, connection: 0, tries: 0, retry: void 0 };
    const { sendTimeout } = this.options;
    if (Number.isFinite(sendTimeout)) {
      p.deadline = setTimeout(() => this.settle(p, new PalaverError("timeout", `not acknowledged within ${sendTimeout} ms; it may still have been stored: resend with the same id to find out`, true, id)), sendTimeout);
    }
    this.outbox.set(id, p);
    this.transmit(p);
    return promise;
  }
  /** Writes a pending send if its room is joined on this connection and it was not written on it yet. */
  transmit(p) {
    if (p.connection === this.generation || !this.rooms.get(p.room)?.joined) return;
    p.connection = this.generation;
    this.write({ type: "send", room: p.room, text: p.text, id: p.id });
  }
  flushOutbox(room) {
    for (const p of this.outbox.values()) if (p.room === room && p.retry === void 0) this.transmit(p);
  }
  settle(p, result) {
    if (this.outbox.get(p.id) !== p) return;
    this.outbox.delete(p.id);
    clearTimeout(p.deadline);
    clearTimeout(p.retry);
    if (result instanceof PalaverError) p.reject(result);
    else p.resolve(result);
  }
  requestHistory(h) {
    if (this.current !== "connected" || !this.rooms.get(h.room)?.joined) {
      h.reject(new PalaverError("disconnected", "the connection was lost", true));
      return;
    }
    const { before, after, limit } = h.query;
    const frame = { type: "history", room: h.room };
    if (before !== void 0) frame.before = before;
    if (after !== void 0) frame.after = after;
    if (limit !== void 0) frame.limit = limit;
    this.historyQueue.push(h);
    this.write(frame);
  }
  requestMembers(m) {
    if (this.current !== "connected" || !this.rooms.get(m.room)?.joined) {
      m.reject(new PalaverError("disconnected", "the connection was lost", true));
      return;
    }
    const frame = { type: "members", room: m.room };
    if (m.query.after !== void 0) frame.after = m.query.after;
    if (m.query.limit !== void 0) frame.limit = m.query.limit;
    this.membersQueue.push(m);
    this.write(frame);
  }
  /** What rooms may ask of the client. */
  link = linkOf(this, {
    connect: () => this.connect(),
    frame: (frame) => this.write(frame),
    awaitJoined: (room) => this.joinQueue.push(room),
    history: (room, query) => new Promise((resolve, reject) => this.requestHistory({ room, query, resolve, reject, tries: 0 })),
    members: (room, query) => new Promise((resolve, reject) => this.requestMembers({ room, query, resolve, reject, tries: 0 })),
    send: (room, text, id) => this.submit(room, text, id),
    dropSends: (room, why) => {
      for (const p of [...this.outbox.values()]) if (p.room === room) this.settle(p, why);
    },
    forget: (room) => {
      if (this.rooms.get(room.name) === room) this.rooms.delete(room.name);
      this.store.forget(room.name);
    }
  });
};
function linkOf(client, link) {
  return Object.defineProperty(link, "connected", { get: () => client.state === "connected" });
}
var scope = globalThis;
function definedOnly(o) {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== void 0));
}
function socketUrl(url) {
  const page = globalThis.location?.href;
  const u = page ? new URL(url, page) : new URL(url);
  if (u.protocol === "http:") u.protocol = "ws:";
  if (u.protocol === "https:") u.protocol = "wss:";
  if (u.pathname === "/" || u.pathname === "") u.pathname = "/ws";
  return u.toString();
}
function hasOnlineEvents() {
  const nav = globalThis.navigator;
  return typeof scope.addEventListener === "function" && typeof nav?.onLine === "boolean";
}
function isOffline() {
  const nav = globalThis.navigator;
  return nav?.onLine === false;
}
function tokenExpired(token) {
  try {
    const payload = token.split(".")[1] ?? "";
    const json = atob(payload.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(payload.length / 4) * 4, "="));
    const exp = JSON.parse(json).exp;
    return typeof exp === "number" && exp * 1e3 <= Date.now();
  } catch {
    return false;
  }
}
export {
  Palaver,
  PalaverError,
  Room,
  backoffCeiling,
  fullJitter,
  messageId
};
