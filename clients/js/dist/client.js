// The connection: one WebSocket at a time, reconnected with backoff, watched by
// a heartbeat, authenticated by name or token; requests matched to replies;
// the outbox of sends retried until acked.
import { fullJitter } from './backoff.js';
import { Emitter } from './emitter.js';
import { PalaverError } from './errors.js';
import { messageId } from './ids.js';
import { Pacer } from './pacer.js';
import { Close, ROOM_NAME } from './protocol.js';
import { Room } from './room.js';
import { PositionStore } from './storage.js';
const DEFAULTS = {
    minDelay: 500,
    maxDelay: 10_000,
    policyDelay: 60_000,
    pingInterval: 10_000,
    pongTimeout: 5_000,
    sendTimeout: 60_000,
    tokenIn: 'url',
    storageKey: 'palaver',
    rate: { perSecond: 16, burst: 20 },
    maxFrame: 16_384,
};
/** Close codes after which reconnecting cannot help: a bug to report, not to loop on. */
const FATAL_CLOSES = [Close.ProtocolError, Close.InvalidPayload, Close.TooBig];
/**
 * A Palaver connection and its rooms. Create it, take rooms with `room(name)`,
 * `join()` them; the client connects, reconnects and resumes by itself.
 */
export class Palaver extends Emitter {
    url;
    credentials;
    options;
    WS;
    store;
    rooms = new Map();
    outbox = new Map();
    joinQueue = [];
    historyQueue = [];
    membersQueue = [];
    ws;
    pacer;
    current = 'disconnected';
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
        if (this.ws)
            this.abandon(this.ws, 1006, 'the browser went offline');
    };
    constructor(url, credentials = {}, options = {}) {
        super();
        this.url = socketUrl(url);
        this.credentials = credentials;
        const watchOnline = options.watchOnline ?? hasOnlineEvents();
        this.options = { ...DEFAULTS, ...definedOnly(options), watchOnline };
        const WS = options.WebSocket ?? globalThis.WebSocket;
        if (!WS)
            throw new TypeError('no WebSocket implementation: pass { WebSocket } (e.g. from the "ws" package) on Node 20');
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
        if (!ROOM_NAME.test(name))
            throw new TypeError(`invalid room name ${JSON.stringify(name)}: 1–64 of A–Z a–z 0–9 _ . : -`);
        let room = this.rooms.get(name);
        if (!room) {
            room = new Room(name, this.link, this.store);
            this.rooms.set(name, room);
        }
        return room;
    }
    /** Starts connecting (joining a room does it too). */
    connect() {
        if (this.wanted)
            return;
        this.wanted = true;
        this.attempt = 0;
        if (this.options.watchOnline) {
            scope.addEventListener?.('online', this.onOnline);
            scope.addEventListener?.('offline', this.onOffline);
        }
        this.open();
    }
    /** Closes the connection for good; pending sends and history requests are rejected. */
    close() {
        this.stop(Close.Normal, 'closed by the application');
    }
    // ---- Connecting -------------------------------------------------------------
    async open() {
        clearTimeout(this.reconnectTimer);
        this.reconnectTimer = undefined;
        if (!this.wanted || this.ws)
            return;
        if (isOffline()) {
            this.setDisconnected({ code: 1006, reason: 'offline', willReconnect: true });
            return; // the `online` event resumes
        }
        const generation = ++this.generation;
        this.setState('connecting');
        this.emit('connecting', { attempt: this.attempt });
        let url;
        try {
            const token = await this.currentToken();
            if (generation !== this.generation || !this.wanted)
                return;
            if (token === null) {
                this.stop(Close.Unauthorized, 'getToken returned no token', new PalaverError('unauthorized', 'getToken returned no token: signed out'));
                return;
            }
            url = this.connectUrl(token);
        }
        catch (e) {
            if (generation !== this.generation || !this.wanted)
                return;
            this.emit('error', new PalaverError('token_unavailable', `getToken failed: ${String(e)}`, true));
            this.scheduleReconnect(1006, 'getToken failed');
            return;
        }
        let ws;
        try {
            ws = new this.WS(url);
        }
        catch (e) {
            this.stop(1006, String(e), new PalaverError('invalid_url', `cannot open ${url}: ${String(e)}`));
            return;
        }
        this.ws = ws;
        ws.onopen = () => {
            if (this.ws !== ws)
                return;
            this.lastHeard = Date.now();
            if (this.options.tokenIn === 'frame' && this.token)
                ws.send(JSON.stringify({ type: 'auth', token: this.token }));
            this.startHeartbeat(ws);
        };
        ws.onmessage = (ev) => {
            if (this.ws !== ws)
                return;
            this.lastHeard = Date.now();
            if (typeof ev.data === 'string')
                this.onFrame(ev.data);
        };
        ws.onclose = (ev) => {
            if (this.ws === ws)
                this.drop(ws, ev.code, ev.reason);
        };
        ws.onerror = () => {
            /* a close event follows */
        };
    }
    /** `undefined`: no token needed; `null`: signed out. */
    async currentToken() {
        const { getToken } = this.credentials;
        if (!getToken)
            return undefined;
        if (this.token === undefined || tokenExpired(this.token)) {
            const token = await getToken();
            this.token = token ?? undefined;
            if (token === null || token === undefined)
                return null;
        }
        return this.token;
    }
    connectUrl(token) {
        const u = new URL(this.url);
        if (this.credentials.name)
            u.searchParams.set('name', this.credentials.name);
        if (token !== undefined && this.options.tokenIn === 'url')
            u.searchParams.set('token', token);
        return u.toString();
    }
    /** The socket closed (or was found dead): forget per-connection state and decide what next. */
    drop(ws, code, reason) {
        const welcomed = this.current === 'connected';
        this.detach(ws);
        this.connectionLost();
        if (!welcomed)
            this.failedBeforeWelcome++;
        if (code === Close.Unauthorized) {
            if (!this.credentials.getToken) {
                this.stop(code, reason, new PalaverError('unauthorized', reason || 'the server wants a token (close 4001)'));
                return;
            }
            this.token = undefined; // expired or refused: ask for a new one
        }
        else if (this.credentials.getToken && this.failedBeforeWelcome >= 3) {
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
    scheduleReconnect(code, reason, atLeast = 0) {
        if (!this.wanted)
            return;
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
        this.reconnectTimer = undefined;
        this.generation++;
        scope.removeEventListener?.('online', this.onOnline);
        scope.removeEventListener?.('offline', this.onOffline);
        const ws = this.ws;
        if (ws) {
            this.detach(ws);
            try {
                ws.close(Close.Normal, 'bye');
            }
            catch {
                /* already closing */
            }
        }
        this.connectionLost();
        const why = error ?? new PalaverError('closed', reason);
        for (const p of [...this.outbox.values()])
            this.settle(p, why);
        for (const room of this.rooms.values())
            room.clientStopped(why);
        if (error)
            this.emit('error', error);
        this.setDisconnected({ code, reason, willReconnect: false });
    }
    detach(ws) {
        ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
        if (this.ws === ws)
            this.ws = undefined;
        clearInterval(this.heartbeat);
        this.heartbeat = undefined;
    }
    /** Per-connection state goes: the pace, replies awaited, rooms' liveness. */
    connectionLost() {
        this.welcome = undefined;
        this.pacer.reset();
        this.joinQueue = [];
        const lost = new PalaverError('disconnected', 'the connection was lost', true);
        for (const h of this.historyQueue.splice(0))
            h.reject(lost);
        for (const m of this.membersQueue.splice(0))
            m.reject(lost);
        for (const room of this.rooms.values())
            room.connectionLost();
        // Sends waiting out a retry delay go again as soon as their room is rejoined.
        for (const p of this.outbox.values()) {
            clearTimeout(p.retry);
            p.retry = undefined;
        }
    }
    /** Gives up on a socket believed dead: closes it without waiting for the handshake, then reconnects. */
    abandon(ws, code, reason) {
        try {
            // A dead link cannot carry a closing handshake: `ws` can drop the socket at once.
            const terminate = ws.terminate;
            if (terminate)
                terminate.call(ws);
            else
                ws.close(Close.HeartbeatTimeout, reason.slice(0, 100));
        }
        catch {
            /* closing anyway */
        }
        this.drop(ws, code, reason);
    }
    /** Pings when the server has been quiet; declares the link dead when even the ping gets no answer. */
    startHeartbeat(ws) {
        const { pingInterval, pongTimeout } = this.options;
        clearInterval(this.heartbeat);
        this.heartbeat = setInterval(() => {
            if (this.ws !== ws)
                return;
            const now = Date.now();
            const quiet = now - this.lastHeard;
            if (quiet >= pingInterval + pongTimeout) {
                this.abandon(ws, Close.HeartbeatTimeout, 'no reply from the server (heartbeat timeout)');
            }
            else if (quiet >= pingInterval && now - this.lastPing >= pingInterval && this.current === 'connected') {
                this.lastPing = now;
                this.write({ type: 'ping' });
            }
        }, Math.max(50, Math.min(pingInterval, pongTimeout) / 4));
    }
    setState(state, disconnect) {
        this.current = state;
        this.emit('state', disconnect ? { state, disconnect } : { state });
    }
    setDisconnected(d) {
        this.setState('disconnected', d);
        this.emit('disconnected', d);
    }
    // ---- Frames -----------------------------------------------------------------
    write(frame) {
        if (this.ws && this.current === 'connected')
            this.pacer.push(JSON.stringify(frame));
    }
    onFrame(data) {
        let f;
        try {
            f = JSON.parse(data);
        }
        catch {
            return;
        }
        switch (f.type) {
            case 'welcome':
                return this.onWelcome(f);
            case 'joined': {
                const i = this.joinQueue.indexOf(f.room);
                if (i >= 0)
                    this.joinQueue.splice(i, 1);
                const room = this.rooms.get(f.room);
                if (!room)
                    return;
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
                if (p && p.room === f.room)
                    this.settle(p, { id: f.id, room: f.room, seq: f.seq, duplicate: f.duplicate });
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
    onWelcome(f) {
        this.welcome = { session: f.session, node: f.node, user: f.user, protocol: f.protocol };
        this.attempt = 0;
        this.failedBeforeWelcome = 0;
        this.setState('connected');
        this.emit('connected', this.welcome);
        for (const room of this.rooms.values())
            if (room.isWanted)
                room.sendJoin();
    }
    /** Errors go to the request they name (a send's id, or the oldest join/history awaiting a reply). */
    onError(f) {
        const error = new PalaverError(f.code, f.message, f.retryable, f.ref);
        if (f.code === 'rate_limited')
            this.pacer.slowDown();
        const generation = this.generation;
        const later = (tries, fn) => setTimeout(() => {
            if (generation === this.generation && this.current === 'connected')
                fn();
        }, this.retryDelay(tries, f.code));
        const send = f.ref !== undefined ? this.outbox.get(f.ref) : undefined;
        if (send) {
            if (!f.retryable)
                return this.settle(send, error);
            this.rooms.get(send.room)?.onError(error); // told, and retried
            send.connection = 0;
            clearTimeout(send.retry);
            send.retry = setTimeout(() => {
                send.retry = undefined;
                if (generation === this.generation)
                    this.transmit(send);
            }, this.retryDelay(send.tries++, f.code));
            return;
        }
        if (f.ref === 'join') {
            const name = this.joinQueue.shift();
            const room = name !== undefined ? this.rooms.get(name) : undefined;
            if (!room || !room.isWanted)
                return;
            if (f.retryable)
                later(this.attempt, () => room.isWanted && !room.joined && room.sendJoin());
            else
                room.onJoinRefused(error);
            return;
        }
        if (f.ref === 'history') {
            const h = this.historyQueue.shift();
            if (!h)
                return;
            if (!f.retryable || h.tries >= 5)
                return h.reject(error);
            later(h.tries++, () => this.requestHistory(h));
            return;
        }
        if (f.ref === 'members') {
            const m = this.membersQueue.shift();
            if (!m)
                return;
            if (!f.retryable || m.tries >= 5)
                return m.reject(error);
            later(m.tries++, () => this.requestMembers(m));
            return;
        }
        if (f.ref === 'typing' || f.ref === 'ping' || f.ref === 'leave')
            return;
        this.emit('error', error);
    }
    /** Backoff before retrying a refused request; `rate_limited` also waits for the server's budget to refill. */
    retryDelay(tries, code) {
        return fullJitter(tries, this.options.minDelay, this.options.maxDelay) + (code === 'rate_limited' ? 1000 : 0);
    }
    // ---- Sending ----------------------------------------------------------------
    submit(room, text, id = messageId()) {
        if (!this.wanted)
            return Promise.reject(new PalaverError('closed', 'the client is closed: connect() first'));
        const existing = this.outbox.get(id);
        if (existing)
            return existing.promise;
        const bytes = new TextEncoder().encode(JSON.stringify({ type: 'send', room, text, id })).length;
        if (bytes > this.options.maxFrame) {
            return Promise.reject(new PalaverError('frame_too_large', `the message is ${bytes} bytes encoded; the limit is ${this.options.maxFrame}`));
        }
        let resolve;
        let reject;
        const promise = new Promise((res, rej) => {
            resolve = res;
            reject = rej;
        });
        const p = { id, room, text, promise, resolve, reject, deadline: undefined, connection: 0, tries: 0, retry: undefined };
        const { sendTimeout } = this.options;
        if (Number.isFinite(sendTimeout)) {
            p.deadline = setTimeout(() => this.settle(p, new PalaverError('timeout', `not acknowledged within ${sendTimeout} ms; it may still have been stored: resend with the same id to find out`, true, id)), sendTimeout);
        }
        this.outbox.set(id, p);
        this.transmit(p);
        return promise;
    }
    /** Writes a pending send if its room is joined on this connection and it was not written on it yet. */
    transmit(p) {
        if (p.connection === this.generation || !this.rooms.get(p.room)?.joined)
            return;
        p.connection = this.generation;
        this.write({ type: 'send', room: p.room, text: p.text, id: p.id });
    }
    flushOutbox(room) {
        for (const p of this.outbox.values())
            if (p.room === room && p.retry === undefined)
                this.transmit(p);
    }
    settle(p, result) {
        if (this.outbox.get(p.id) !== p)
            return;
        this.outbox.delete(p.id);
        clearTimeout(p.deadline);
        clearTimeout(p.retry);
        if (result instanceof PalaverError)
            p.reject(result);
        else
            p.resolve(result);
    }
    requestHistory(h) {
        if (this.current !== 'connected' || !this.rooms.get(h.room)?.joined) {
            h.reject(new PalaverError('disconnected', 'the connection was lost', true));
            return;
        }
        const { before, after, limit } = h.query;
        const frame = { type: 'history', room: h.room };
        if (before !== undefined)
            frame.before = before;
        if (after !== undefined)
            frame.after = after;
        if (limit !== undefined)
            frame.limit = limit;
        this.historyQueue.push(h);
        this.write(frame);
    }
    requestMembers(m) {
        if (this.current !== 'connected' || !this.rooms.get(m.room)?.joined) {
            m.reject(new PalaverError('disconnected', 'the connection was lost', true));
            return;
        }
        const frame = { type: 'members', room: m.room };
        if (m.query.after !== undefined)
            frame.after = m.query.after;
        if (m.query.limit !== undefined)
            frame.limit = m.query.limit;
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
            for (const p of [...this.outbox.values()])
                if (p.room === room)
                    this.settle(p, why);
        },
        forget: (room) => {
            if (this.rooms.get(room.name) === room)
                this.rooms.delete(room.name);
            this.store.forget(room.name);
        },
    });
}
function linkOf(client, link) {
    return Object.defineProperty(link, 'connected', { get: () => client.state === 'connected' });
}
/** The global scope's event methods, where there are any (browsers). */
const scope = globalThis;
function definedOnly(o) {
    return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
}
/** `http(s)://host` works too (the scheme becomes `ws(s)`, an empty path `/ws`), and in a page so does a relative URL such as `/ws`. */
function socketUrl(url) {
    const page = globalThis.location?.href;
    const u = page ? new URL(url, page) : new URL(url);
    if (u.protocol === 'http:')
        u.protocol = 'ws:';
    if (u.protocol === 'https:')
        u.protocol = 'wss:';
    if (u.pathname === '/' || u.pathname === '')
        u.pathname = '/ws';
    return u.toString();
}
function hasOnlineEvents() {
    const nav = globalThis.navigator;
    return typeof scope.addEventListener === 'function' && typeof nav?.onLine === 'boolean';
}
function isOffline() {
    const nav = globalThis.navigator;
    return nav?.onLine === false;
}
/** Whether a JWT's `exp` has passed (tokens that cannot be read are assumed fresh). */
function tokenExpired(token) {
    try {
        const payload = token.split('.')[1] ?? '';
        const json = atob(payload.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(payload.length / 4) * 4, '='));
        const exp = JSON.parse(json).exp;
        return typeof exp === 'number' && exp * 1000 <= Date.now();
    }
    catch {
        return false;
    }
}
