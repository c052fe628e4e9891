import { Emitter } from './emitter.js';
import { PalaverError } from './errors.js';
import { type Rate } from './pacer.js';
import { type WelcomeFrame } from './protocol.js';
import { Room } from './room.js';
import { type StorageLike } from './storage.js';
/** The part of the WebSocket API the client uses (browsers' `WebSocket`, Node ≥ 22's, or the `ws` package's). */
export interface WebSocketLike {
    readonly readyState: number;
    onopen: ((ev: unknown) => void) | null;
    onmessage: ((ev: {
        data: unknown;
    }) => void) | null;
    onclose: ((ev: {
        code: number;
        reason: string;
    }) => void) | null;
    onerror: ((ev: unknown) => void) | null;
    send(data: string): void;
    close(code?: number, reason?: string): void;
}
/** A WebSocket constructor such as `globalThis.WebSocket` or `import { WebSocket } from 'ws'`. */
export type WebSocketConstructor = new (url: string) => WebSocketLike;
/** Who connects: a guest with a nickname, or a user with tokens from `getToken`. */
export type Credentials = {
    name?: string;
    getToken?: undefined;
} | {
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
    state: {
        state: ConnectionState;
        disconnect?: Disconnect;
    };
    connecting: {
        attempt: number;
    };
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
/**
 * A Palaver connection and its rooms. Create it, take rooms with `room(name)`,
 * `join()` them; the client connects, reconnects and resumes by itself.
 */
export declare class Palaver extends Emitter<ClientEvents> {
    private readonly url;
    private readonly credentials;
    private readonly options;
    private readonly WS;
    private readonly store;
    private readonly rooms;
    private readonly outbox;
    private joinQueue;
    private historyQueue;
    private membersQueue;
    private ws;
    private pacer;
    private current;
    private welcome;
    private wanted;
    private attempt;
    /** Bumped for every socket, so stale callbacks and timers know they are stale. */
    private generation;
    private reconnectTimer;
    private heartbeat;
    private lastHeard;
    private lastPing;
    private token;
    private failedBeforeWelcome;
    private readonly onOnline;
    private readonly onOffline;
    constructor(url: string, credentials?: Credentials, options?: PalaverOptions);
    /** The connection's state. */
    get state(): ConnectionState;
    /** The user name the server gave this connection (from `welcome`), once connected. */
    get user(): string | undefined;
    /** The serving node's id and the session id, once connected. */
    get session(): Welcome | undefined;
    /** The room called `name` (created on first use; joined with `room.join()`). */
    room(name: string): Room;
    /** Starts connecting (joining a room does it too). */
    connect(): void;
    /** Closes the connection for good; pending sends and history requests are rejected. */
    close(): void;
    private open;
    /** `undefined`: no token needed; `null`: signed out. */
    private currentToken;
    private connectUrl;
    /** The socket closed (or was found dead): forget per-connection state and decide what next. */
    private drop;
    private scheduleReconnect;
    /** Ends the connection and every pending request; reconnects only on `connect()`. */
    private stop;
    private detach;
    /** Per-connection state goes: the pace, replies awaited, rooms' liveness. */
    private connectionLost;
    /** Gives up on a socket believed dead: closes it without waiting for the handshake, then reconnects. */
    private abandon;
    /** Pings when the server has been quiet; declares the link dead when even the ping gets no answer. */
    private startHeartbeat;
    private setState;
    private setDisconnected;
    private write;
    private onFrame;
    private onWelcome;
    /** Errors go to the request they name (a send's id, or the oldest join/history awaiting a reply). */
    private onError;
    /** Backoff before retrying a refused request; `rate_limited` also waits for the server's budget to refill. */
    private retryDelay;
    private submit;
    /** Writes a pending send if its room is joined on this connection and it was not written on it yet. */
    private transmit;
    private flushOutbox;
    private settle;
    private requestHistory;
    private requestMembers;
    /** What rooms may ask of the client. */
    private readonly link;
}
