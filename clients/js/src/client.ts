// The connection: one WebSocket at a time, reconnected with backoff, watched by
// a heartbeat, authenticated by name or token; requests matched to replies;
// the outbox of sends retried until acked.

import { fullJitter } from './backoff.js';
import { Emitter } from './emitter.js';
import { PalaverError } from './errors.js';
import { messageId } from './ids.js';
import { Pacer, type Rate } from './pacer.js';
import { Close, ROOM_NAME, type ClientFrame, type ErrorFrame, type HistoryFrame, type MembersFrame, type ServerFrame, type WelcomeFrame } from './protocol.js';
import { Room, type Ack, type HistoryQuery, type RoomLink } from './room.js';
import { PositionStore, type StorageLike } from './storage.js';

/** The part of the WebSocket API the client uses (browsers' `WebSocket`, Node ≥ 22's, or the `ws` package's). */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

/** A WebSocket constructor such as `globalThis.WebSocket` or `import { WebSocket } from 'ws'`. */
export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** Who connects: a guest with a nickname, or a user with tokens from `getToken`. */
export type Credentials =
  | { name?: string; getToken?: undefined }
  | {
      /**
       * Returns a JWT for the server; called before the first connection, after
       * close 4001 (token expired or refused) and when the token held has
       * expired. Resolving `null` means "signed out": the client stops. A
       * rejection is retried with backoff.
       */
      getToken: () => string | null | undefined | Promise<string | null | undefined>;
      /** Optional nickname for servers in guest mode. */
      name?: string;
    };

/** Connection states: no socket, opening one (until `welcome`), connected. */
export type ConnectionState = 'disconnected' | 'connecting' | 'connected';

/** Why the client is (or stays) disconnected. */
export interface Disconnect {
  /** The close code (1006 for a dropped link, 4000 when the heartbeat found the link dead). */
  code: number;
  reason: string;
  /** A reconnect is scheduled (or waits for the browser to be online again). */
  willReconnect: boolean;
  /** Milliseconds until the reconnect, when scheduled. */
  delay?: number;
}

/** The server's `welcome`. */
export type Welcome = Omit<WelcomeFrame, 'type'>;

/** Events of the client. */
export type ClientEvents = {
  /** Every state change; `disconnected` carries the `Disconnect`. */
  state: { state: ConnectionState; disconnect?: Disconnect };
  connecting: { attempt: number };
  connected: Welcome;
  disconnected: Disconnect;
  /** Problems not tied to one room or request: refused connections, unrecoverable close codes, a failing `getToken`. */
  error: PalaverError;
  [name: string]: unknown;
};

/** Options of `new Palaver(url, credentials, options)`; every field is optional. */
export interface PalaverOptions {
  /** WebSocket implementation; default `globalThis.WebSocket` (Node 20 needs `ws`). */
  WebSocket?: WebSocketConstructor;
  /** First reconnect delay ceiling, ms (full jitter under it): 500. */
  minDelay?: number;
  /** Largest reconnect and retry delay, ms: 10,000. */
  maxDelay?: number;
  /** Wait after close 1008 (the server judged this client a flood), ms: 60,000. */
  policyDelay?: number;
  /** Send an application `ping` after this long without hearing from the server, ms: 10,000. */
  pingInterval?: number;
  /** Declare the link dead when nothing arrives this long after the ping would have gone, ms: 5,000. */
  pongTimeout?: number;
  /** Give up retrying a send after this long, ms (`Infinity`: never): 60,000. */
  sendTimeout?: number;
  /** How a token travels: on the URL (`?token=`, accepted in every auth mode) or as the `auth` first frame (token mode; keeps it out of URLs): `url`. */
  tokenIn?: 'url' | 'frame';
  /** Keep room positions here (e.g. `sessionStorage`) so a reload resumes. */
  storage?: StorageLike;
  /** Key prefix in `storage`: `palaver`. */
  storageKey?: string;
  /** Outgoing pace, below the server's `--rate-limit`: 16 frames/s, bursts of 20. */
  rate?: Rate;
  /** Largest frame to send, bytes (the server's `--max-frame`): 16,384. */
  maxFrame?: number;
  /** Follow the browser's `online`/`offline` events: true where they exist. */
  watchOnline?: boolean;
}

interface PendingSend {
  id: string;
  room: string;
  text: string;
  promise: Promise<Ack>;
  resolve: (ack: Ack) => void;
  reject: (e: PalaverError) => void;
  deadline: ReturnType<typeof setTimeout> | undefined;
  /** The connection it was last written on. */
  connection: number;
  tries: number;
  retry: ReturnType<typeof setTimeout> | undefined;
}

interface PendingHistory {
  room: string;
  query: HistoryQuery;
  resolve: (page: HistoryFrame) => void;
  reject: (e: PalaverError) => void;
  tries: number;
}

interface PendingMembers {
  room: string;
  query: { after?: string; limit?: number };
  resolve: (page: MembersFrame) => void;
  reject: (e: PalaverError) => void;
  tries: number;
}

const DEFAULTS = {
  minDelay: 500,
  maxDelay: 10_000,
  policyDelay: 60_000,
  pingInterval: 10_000,
  pongTimeout: 5_000,
  sendTimeout: 60_000,
  tokenIn: 'url' as 'url' | 'frame',
  storageKey: 'palaver',
  rate: { perSecond: 16, burst: 20 },
  maxFrame: 16_384,
};

/** Close codes after which reconnecting cannot help: a bug to report, not to loop on. */
const FATAL_CLOSES: readonly number[] = [Close.ProtocolError, Close.InvalidPayload, Close.TooBig];

/**
 * A Palaver connection and its rooms. Create it, take rooms with `room(name)`,
 * `join()` them; the client connects, reconnects and resumes by itself.
 */
export class Palaver extends Emitter<ClientEvents> {
  private readonly url: string;
  private readonly credentials: Credentials;
  private readonly options: typeof DEFAULTS & { watchOnline: boolean; storage?: StorageLike };
  private readonly WS: WebSocketConstructor;
  private readonly store: PositionStore;
  private readonly rooms = new Map<string, Room>();
  private readonly outbox = new Map<string, PendingSend>();
  private joinQueue: string[] = [];
  private historyQueue: PendingHistory[] = [];
  private membersQueue: PendingMembers[] = [];
  private ws: WebSocketLike | undefined;
  private pacer: Pacer;
  private current: ConnectionState = 'disconnected';
  private welcome: Welcome | undefined;
  private wanted = false;
  private attempt = 0;
  /** Bumped for every socket, so stale callbacks and timers know they are stale. */
  private generation = 0;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private heartbeat: ReturnType<typeof setInterval> | undefined;
  private lastHeard = 0;
  private lastPing = 0;
  private token: string | undefined;
  private failedBeforeWelcome = 0;
  private readonly onOnline = (): void => {
    if (this.wanted && !this.ws) {
      this.attempt = 0;
      this.open();
    }
  };
  private readonly onOffline = (): void => {
    if (this.ws) this.abandon(this.ws, 1006, 'the browser went offline');
  };

  constructor(url: string, credentials: Credentials = {}, options: PalaverOptions = {}) {
    super();
    this.url = socketUrl(url);
    this.credentials = credentials;
    const watchOnline = options.watchOnline ?? hasOnlineEvents();
    this.options = { ...DEFAULTS, ...definedOnly(options), watchOnline };
    const WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WS) throw new TypeError('no WebSocket implementation: pass { WebSocket } (e.g. from the "ws" package) on Node 20');
    this.WS = WS;
    this.store = new PositionStore(options.storage, this.options.storageKey);
    this.pacer = new Pacer(this.options.rate, (data) => this.ws?.send(data));
  }

  /** The connection's state. */
  get state(): ConnectionState {
    return this.current;
  }

  /** The user name the server gave this connection (from `welcome`), once connected. */
  get user(): string | undefined {
    return this.welcome?.user;
  }

  /** The serving node's id and the session id, once connected. */
  get session(): Welcome | undefined {
    return this.welcome;
  }

  /** The room called `name` (created on first use; joined with `room.join()`). */
  room(name: string): Room {
    if (!ROOM_NAME.test(name)) throw new TypeError(`invalid room name ${JSON.stringify(name)}: 1–64 of A–Z a–z 0–9 _ . : -`);
    let room = this.rooms.get(name);
    if (!room) {
      room = new Room(name, this.link, this.store);
      this.rooms.set(name, room);
    }
    return room;
  }

  /** Starts connecting (joining a room does it too). */
  connect(): void {
    if (this.wanted) return;
    this.wanted = true;
    this.attempt = 0;
    if (this.options.watchOnline) {
      scope.addEventListener?.('online', this.onOnline);
      scope.addEventListener?.('offline', this.onOffline);
    }
    this.open();
  }

  /** Closes the connection for good; pending sends and history requests are rejected. */
  close(): void {
    this.stop(Close.Normal, 'closed by the application');
  }

  // ---- Connecting -------------------------------------------------------------

  private async open(): Promise<void> {
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    if (!this.wanted || this.ws) return;
    if (isOffline()) {
      this.setDisconnected({ code: 1006, reason: 'offline', willReconnect: true });
      return; // the `online` event resumes
    }
    const generation = ++this.generation;
    this.setState('connecting');
    this.emit('connecting', { attempt: this.attempt });
    let url: string;
    try {
      const token = await this.currentToken();
      if (generation !== this.generation || !this.wanted) return;
      if (token === null) {
        this.stop(Close.Unauthorized, 'getToken returned no token', new PalaverError('unauthorized', 'getToken returned no token: signed out'));
        return;
      }
      url = this.connectUrl(token);
    } catch (e) {
      if (generation !== this.generation || !this.wanted) return;
      this.emit('error', new PalaverError('token_unavailable', `getToken failed: ${String(e)}`, true));
      this.scheduleReconnect(1006, 'getToken failed');
      return;
    }
    let ws: WebSocketLike;
    try {
      ws = new this.WS(url);
    } catch (e) {
      this.stop(1006, String(e), new PalaverError('invalid_url', `cannot open ${url}: ${String(e)}`));
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.lastHeard = Date.now();
      if (this.options.tokenIn === 'frame' && this.token) ws.send(JSON.stringify({ type: 'auth', token: this.token }));
      this.startHeartbeat(ws);
    };
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      this.lastHeard = Date.now();
      if (typeof ev.data === 'string') this.onFrame(ev.data);
    };
    ws.onclose = (ev) => {
      if (this.ws === ws) this.drop(ws, ev.code, ev.reason);
    };
    ws.onerror = () => {
      /* a close event follows */
    };
  }

  /** `undefined`: no token needed; `null`: signed out. */
  private async currentToken(): Promise<string | null | undefined> {
    const { getToken } = this.credentials;
    if (!getToken) return undefined;
    if (this.token === undefined || tokenExpired(this.token)) {
      const token = await getToken();
      this.token = token ?? undefined;
      if (token === null || token === undefined) return null;
    }
    return this.token;
  }

  private connectUrl(token: string | undefined): string {
    const u = new URL(this.url);
    if (this.credentials.name) u.searchParams.set('name', this.credentials.name);
    if (token !== undefined && this.options.tokenIn === 'url') u.searchParams.set('token', token);
    return u.toString();
  }

  /** The socket closed (or was found dead): forget per-connection state and decide what next. */
  private drop(ws: WebSocketLike, code: number, reason: string): void {
    const welcomed = this.current === 'connected';
    this.detach(ws);
    this.connectionLost();
    if (!welcomed) this.failedBeforeWelcome++;
    if (code === Close.Unauthorized) {
      if (!this.credentials.getToken) {
        this.stop(code, reason, new PalaverError('unauthorized', reason || 'the server wants a token (close 4001)'));
        return;
      }
      this.token = undefined; // expired or refused: ask for a new one
    } else if (this.credentials.getToken && this.failedBeforeWelcome >= 3) {
      // A token refused before the upgrade (HTTP 401) looks like an unreachable
      // server to a browser: after a few failures, try a fresh one.
      this.token = undefined;
      this.failedBeforeWelcome = 0;
    }
    if (FATAL_CLOSES.includes(code)) {
      this.stop(code, reason, new PalaverError(`closed_${code}`, `the server closed the connection with ${code}${reason ? `: ${reason}` : ''}; not reconnecting`));
      return;
    }
    if (code === Close.PolicyViolation) {
      this.emit('error', new PalaverError('closed_1008', `the server closed the connection for flooding${reason ? `: ${reason}` : ''}; backing off`, true));
      this.scheduleReconnect(code, reason, this.options.policyDelay);
      return;
    }
    this.scheduleReconnect(code, reason);
  }

  private scheduleReconnect(code: number, reason: string, atLeast = 0): void {
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
  private stop(code: number, reason: string, error?: PalaverError): void {
    this.wanted = false;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    this.generation++;
    scope.removeEventListener?.('online', this.onOnline);
    scope.removeEventListener?.('offline', this.onOffline);
    const ws = this.ws;
    if (ws) {
      this.detach(ws);
      try {
        ws.close(Close.Normal, 'bye');
      } catch {
        /* already closing */
      }
    }
    this.connectionLost();
    const why = error ?? new PalaverError('closed', reason);
    for (const p of [...this.outbox.values()]) this.settle(p, why);
    for (const room of this.rooms.values()) room.clientStopped(why);
    if (error) this.emit('error', error);
    this.setDisconnected({ code, reason, willReconnect: false });
  }

  private detach(ws: WebSocketLike): void {
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    if (this.ws === ws) this.ws = undefined;
    clearInterval(this.heartbeat);
    this.heartbeat = undefined;
  }

  /** Per-connection state goes: the pace, replies awaited, rooms' liveness. */
  private connectionLost(): void {
    this.welcome = undefined;
    this.pacer.reset();
    this.joinQueue = [];
    const lost = new PalaverError('disconnected', 'the connection was lost', true);
    for (const h of this.historyQueue.splice(0)) h.reject(lost);
    for (const m of this.membersQueue.splice(0)) m.reject(lost);
    for (const room of this.rooms.values()) room.connectionLost();
    // Sends waiting out a retry delay go again as soon as their room is rejoined.
    for (const p of this.outbox.values()) {
      clearTimeout(p.retry);
      p.retry = undefined;
    }
  }

  /** Gives up on a socket believed dead: closes it without waiting for the handshake, then reconnects. */
  private abandon(ws: WebSocketLike, code: number, reason: string): void {
    try {
      // A dead link cannot carry a closing handshake: `ws` can drop the socket at once.
      const terminate = (ws as { terminate?: () => void }).terminate;
      if (terminate) terminate.call(ws);
      else ws.close(Close.HeartbeatTimeout, reason.slice(0, 100));
    } catch {
      /* closing anyway */
    }
    this.drop(ws, code, reason);
  }

  /** Pings when the server has been quiet; declares the link dead when even the ping gets no answer. */
  private startHeartbeat(ws: WebSocketLike): void {
    const { pingInterval, pongTimeout } = this.options;
    clearInterval(this.heartbeat);
    this.heartbeat = setInterval(() => {
      if (this.ws !== ws) return;
      const now = Date.now();
      const quiet = now - this.lastHeard;
      if (quiet >= pingInterval + pongTimeout) {
        this.abandon(ws, Close.HeartbeatTimeout, 'no reply from the server (heartbeat timeout)');
      } else if (quiet >= pingInterval && now - this.lastPing >= pingInterval && this.current === 'connected') {
        this.lastPing = now;
        this.write({ type: 'ping' });
      }
    }, Math.max(50, Math.min(pingInterval, pongTimeout) / 4));
  }

  private setState(state: ConnectionState, disconnect?: Disconnect): void {
    this.current = state;
    this.emit('state', disconnect ? { state, disconnect } : { state });
  }

  private setDisconnected(d: Disconnect): void {
    this.setState('disconnected', d);
    this.emit('disconnected', d);
  }

  // ---- Frames -----------------------------------------------------------------

  private write(frame: ClientFrame): void {
    if (this.ws && this.current === 'connected') this.pacer.push(JSON.stringify(frame));
  }

  private onFrame(data: string): void {
    let f: ServerFrame;
    try {
      f = JSON.parse(data) as ServerFrame;
    } catch {
      return;
    }
    switch (f.type) {
      case 'welcome':
        return this.onWelcome(f);
      case 'joined': {
        const i = this.joinQueue.indexOf(f.room);
        if (i >= 0) this.joinQueue.splice(i, 1);
        const room = this.rooms.get(f.room);
        if (!room) return;
        room.onJoined(f);
        this.flushOutbox(f.room);
        return;
      }
      case 'message':
        return this.rooms.get(f.room)?.onMessage(f);
      case 'presence':
        return this.rooms.get(f.room)?.onPresence(f.user, f.state);
      case 'presence_batch':
        return this.rooms.get(f.room)?.onPresenceBatch(f);
      case 'ack': {
        const p = this.outbox.get(f.id);
        if (p && p.room === f.room) this.settle(p, { id: f.id, room: f.room, seq: f.seq, duplicate: f.duplicate });
        return;
      }
      case 'history':
        this.historyQueue.shift()?.resolve(f);
        return;
      case 'members':
        this.membersQueue.shift()?.resolve(f);
        return;
      case 'error':
        return this.onError(f);
      default:
        return; // left, pong, and frames of newer servers
    }
  }

  private onWelcome(f: WelcomeFrame): void {
    this.welcome = { session: f.session, node: f.node, user: f.user, protocol: f.protocol };
    this.attempt = 0;
    this.failedBeforeWelcome = 0;
    this.setState('connected');
    this.emit('connected', this.welcome);
    for (const room of this.rooms.values()) if (room.isWanted) room.sendJoin();
  }

  /** Errors go to the request they name (a send's id, or the oldest join/history awaiting a reply). */
  private onError(f: ErrorFrame): void {
    const error = new PalaverError(f.code, f.message, f.retryable, f.ref);
    if (f.code === 'rate_limited') this.pacer.slowDown();
    const generation = this.generation;
    const later = (tries: number, fn: () => void) =>
      setTimeout(() => {
        if (generation === this.generation && this.current === 'connected') fn();
      }, this.retryDelay(tries, f.code));
    const send = f.ref !== undefined ? this.outbox.get(f.ref) : undefined;
    if (send) {
      if (!f.retryable) return this.settle(send, error);
      this.rooms.get(send.room)?.onError(error); // told, and retried
      send.connection = 0;
      clearTimeout(send.retry);
      send.retry = setTimeout(() => {
        send.retry = undefined;
        if (generation === this.generation) this.transmit(send);
      }, this.retryDelay(send.tries++, f.code));
      return;
    }
    if (f.ref === 'join') {
      const name = this.joinQueue.shift();
      const room = name !== undefined ? this.rooms.get(name) : undefined;
      if (!room || !room.isWanted) return;
      if (f.retryable) later(this.attempt, () => room.isWanted && !room.joined && room.sendJoin());
      else room.onJoinRefused(error);
      return;
    }
    if (f.ref === 'history') {
      const h = this.historyQueue.shift();
      if (!h) return;
      if (!f.retryable || h.tries >= 5) return h.reject(error);
      later(h.tries++, () => this.requestHistory(h));
      return;
    }
    if (f.ref === 'members') {
      const m = this.membersQueue.shift();
      if (!m) return;
      if (!f.retryable || m.tries >= 5) return m.reject(error);
      later(m.tries++, () => this.requestMembers(m));
      return;
    }
    if (f.ref === 'typing' || f.ref === 'ping' || f.ref === 'leave') return;
    this.emit('error', error);
  }

  /** Backoff before retrying a refused request; `rate_limited` also waits for the server's budget to refill. */
  private retryDelay(tries: number, code: string): number {
    return fullJitter(tries, this.options.minDelay, this.options.maxDelay) + (code === 'rate_limited' ? 1000 : 0);
  }

  // ---- Sending ----------------------------------------------------------------

  private submit(room: string, text: string, id = messageId()): Promise<Ack> {
    if (!this.wanted) return Promise.reject(new PalaverError('closed', 'the client is closed: connect() first'));
    const existing = this.outbox.get(id);
    if (existing) return existing.promise;
    const bytes = new TextEncoder().encode(JSON.stringify({ type: 'send', room, text, id })).length;
    if (bytes > this.options.maxFrame) {
      return Promise.reject(new PalaverError('frame_too_large', `the message is ${bytes} bytes encoded; the limit is ${this.options.maxFrame}`));
    }
    let resolve!: (ack: Ack) => void;
    let reject!: (e: PalaverError) => void;
    const promise = new Promise<Ack>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    const p: PendingSend = { id, room, text, promise, resolve, reject, deadline: undefined, connection: 0, tries: 0, retry: undefined };
    const { sendTimeout } = this.options;
    if (Number.isFinite(sendTimeout)) {
      p.deadline = setTimeout(() => this.settle(p, new PalaverError('timeout', `not acknowledged within ${sendTimeout} ms; it may still have been stored: resend with the same id to find out`, true, id)), sendTimeout);
    }
    this.outbox.set(id, p);
    this.transmit(p);
    return promise;
  }

  /** Writes a pending send if its room is joined on this connection and it was not written on it yet. */
  private transmit(p: PendingSend): void {
    if (p.connection === this.generation || !this.rooms.get(p.room)?.joined) return;
    p.connection = this.generation;
    this.write({ type: 'send', room: p.room, text: p.text, id: p.id });
  }

  private flushOutbox(room: string): void {
    for (const p of this.outbox.values()) if (p.room === room && p.retry === undefined) this.transmit(p);
  }

  private settle(p: PendingSend, result: Ack | PalaverError): void {
    if (this.outbox.get(p.id) !== p) return;
    this.outbox.delete(p.id);
    clearTimeout(p.deadline);
    clearTimeout(p.retry);
    if (result instanceof PalaverError) p.reject(result);
    else p.resolve(result);
  }

  private requestHistory(h: PendingHistory): void {
    if (this.current !== 'connected' || !this.rooms.get(h.room)?.joined) {
      h.reject(new PalaverError('disconnected', 'the connection was lost', true));
      return;
    }
    const { before, after, limit } = h.query;
    const frame: ClientFrame = { type: 'history', room: h.room };
    if (before !== undefined) frame.before = before;
    if (after !== undefined) frame.after = after;
    if (limit !== undefined) frame.limit = limit;
    this.historyQueue.push(h);
    this.write(frame);
  }

  private requestMembers(m: PendingMembers): void {
    if (this.current !== 'connected' || !this.rooms.get(m.room)?.joined) {
      m.reject(new PalaverError('disconnected', 'the connection was lost', true));
      return;
    }
    const frame: ClientFrame = { type: 'members', room: m.room };
    if (m.query.after !== undefined) frame.after = m.query.after;
    if (m.query.limit !== undefined) frame.limit = m.query.limit;
    this.membersQueue.push(m);
    this.write(frame);
  }

  /** What rooms may ask of the client. */
  private readonly link: RoomLink = linkOf(this, {
    connect: () => this.connect(),
    frame: (frame) => this.write(frame),
    awaitJoined: (room) => this.joinQueue.push(room),
    history: (room, query) =>
      new Promise<HistoryFrame>((resolve, reject) => this.requestHistory({ room, query, resolve, reject, tries: 0 })),
    members: (room, query) =>
      new Promise<MembersFrame>((resolve, reject) => this.requestMembers({ room, query, resolve, reject, tries: 0 })),
    send: (room, text, id) => this.submit(room, text, id),
    dropSends: (room, why) => {
      for (const p of [...this.outbox.values()]) if (p.room === room) this.settle(p, why);
    },
    forget: (room) => {
      if (this.rooms.get(room.name) === room) this.rooms.delete(room.name);
      this.store.forget(room.name);
    },
  });
}

function linkOf(client: Palaver, link: Omit<RoomLink, 'connected'>): RoomLink {
  return Object.defineProperty(link, 'connected', { get: () => client.state === 'connected' }) as RoomLink;
}

/** The global scope's event methods, where there are any (browsers). */
const scope = globalThis as {
  addEventListener?: (type: string, fn: () => void) => void;
  removeEventListener?: (type: string, fn: () => void) => void;
};

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** `http(s)://host` works too (the scheme becomes `ws(s)`, an empty path `/ws`), and in a page so does a relative URL such as `/ws`. */
function socketUrl(url: string): string {
  const page = (globalThis as { location?: { href?: string } }).location?.href;
  const u = page ? new URL(url, page) : new URL(url);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  if (u.protocol === 'https:') u.protocol = 'wss:';
  if (u.pathname === '/' || u.pathname === '') u.pathname = '/ws';
  return u.toString();
}

function hasOnlineEvents(): boolean {
  const nav = (globalThis as { navigator?: { onLine?: unknown } }).navigator;
  return typeof scope.addEventListener === 'function' && typeof nav?.onLine === 'boolean';
}

function isOffline(): boolean {
  const nav = (globalThis as { navigator?: { onLine?: unknown } }).navigator;
  return nav?.onLine === false;
}

/** Whether a JWT's `exp` has passed (tokens that cannot be read are assumed fresh). */
function tokenExpired(token: string): boolean {
  try {
    const payload = token.split('.')[1] ?? '';
    const json = atob(payload.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(payload.length / 4) * 4, '='));
    const exp = (JSON.parse(json) as { exp?: unknown }).exp;
    return typeof exp === 'number' && exp * 1000 <= Date.now();
  } catch {
    return false;
  }
}

