import { Emitter } from './emitter.js';
import { PalaverError } from './errors.js';
import type { HistoryFrame, JoinedFrame, MembersFrame, MessageFrame, PresenceBatchFrame, PresenceState, Since } from './protocol.js';
import type { PositionStore } from './storage.js';
/** A chat message, delivered once, in `seq` order. */
export interface Message {
    room: string;
    epoch: string;
    seq: number;
    /** The sender's message id (what `send` returned in its ack). */
    id: string;
    user: string;
    text: string;
    /** Server time, ms since the Unix epoch. */
    ts: number;
}
/** The room was (re)joined. */
export interface Joined {
    room: string;
    epoch: string;
    /** The room's latest seq at the join. */
    seq: number;
    /** Users present on every node, sorted: all of them, or the first page when `membersMore`. */
    members: string[];
    /** How many users are present on every node. */
    memberCount: number;
    /** `members` is the first page of a big room: read on with `room.membersPage()`. */
    membersMore: boolean;
    /**
     * False when the server could not resume where this client left off (another
     * epoch, history trimmed, or the server restarted the room unasked): messages
     * may be missing, and delivery restarts after `seq` of `epoch`.
     */
    recovered: boolean;
}
/** Someone joined, left or is typing. */
export interface Presence {
    room: string;
    user: string;
    state: PresenceState;
}
/**
 * The room's member count or known members changed. `complete` says whether
 * `room.members` is the whole list; in a big room it is not (the server sends
 * the first page and then presence in bounded batches) and the application
 * reads pages with `room.membersPage()` when it wants more.
 */
export interface MembersChanged {
    room: string;
    count: number;
    complete: boolean;
}
/** A page of the room's members, ascending by name. */
export interface MembersPage {
    room: string;
    members: string[];
    /** Users named after the last one remain: pass it as `after`. */
    more: boolean;
}
/** A page of history, ascending by seq. */
export interface History {
    room: string;
    epoch: string;
    messages: Message[];
    /** Older (for `before`) or newer (for `after`) messages remain. */
    more: boolean;
}
/** Which page `history` returns: the latest before `before`, or the earliest after `after`. */
export interface HistoryQuery {
    before?: number;
    after?: number;
    /** 1–200, default 50. */
    limit?: number;
}
/** The server's `ack` of a send. */
export interface Ack {
    id: string;
    room: string;
    seq: number;
    /** This id was stored before (a retry): nothing was stored again. */
    duplicate: boolean;
}
/** Events of a room. */
export type RoomEvents = {
    message: Message;
    joined: Joined;
    presence: Presence;
    members: MembersChanged;
    /** Messages that neither the server's replay nor its history could supply (trimmed): `from`..`to` inclusive. */
    gap: {
        room: string;
        epoch: string;
        from: number;
        to: number;
    };
    error: PalaverError;
    [name: string]: unknown;
};
/** What a room needs from its client. */
export interface RoomLink {
    readonly connected: boolean;
    connect(): void;
    frame(frame: {
        type: 'join';
        room: string;
        since?: Since;
    } | {
        type: 'leave' | 'typing';
        room: string;
    }): void;
    awaitJoined(room: string): void;
    history(room: string, query: HistoryQuery): Promise<HistoryFrame>;
    members(room: string, query: {
        after?: string;
        limit?: number;
    }): Promise<MembersFrame>;
    send(room: string, text: string, id?: string): Promise<Ack>;
    dropSends(room: string, why: PalaverError): void;
    forget(room: Room): void;
}
/** A room of one client; get it with `client.room(name)`. */
export declare class Room extends Emitter<RoomEvents> {
    private readonly link;
    private readonly store;
    /** The room's name. */
    readonly name: string;
    private position;
    private wanted;
    private live;
    private memberSet;
    private count;
    private complete;
    private joinWaiters;
    /** Messages that arrived past a gap, held until history fills it. */
    private held;
    private filling;
    /** Bumped whenever the stream restarts, so a stale gap fill is ignored. */
    private stream;
    private lastTyping;
    private lastJoined;
    /** @internal */
    constructor(name: string, link: RoomLink, store: PositionStore);
    /** Joined on the current connection: messages are flowing. */
    get joined(): boolean;
    /**
     * Users present in the room (sorted), as of `joined` plus presence since:
     * the whole list in a small room, the ones known so far in a big one (see
     * `membersComplete`).
     */
    get members(): string[];
    /** How many users are present on every node (from the server, kept current by presence). */
    get memberCount(): number;
    /** Whether `members` is the whole list (false in a big room: page with `membersPage`). */
    get membersComplete(): boolean;
    /**
     * A page of the room's members by name, read from the server (the room must
     * be joined). Page on with `after` set to the last name of the previous page.
     * Users it returns are added to `members`.
     */
    membersPage(query?: {
        after?: string;
        limit?: number;
    }): Promise<MembersPage>;
    /** The epoch of the messages delivered, once known. */
    get epoch(): string | undefined;
    /** The seq of the last message delivered (or of the room's head at the join). */
    get seq(): number;
    /**
     * Enters the room (connecting the client if needed) and keeps it joined across
     * reconnects, resuming with `since`. Resolves on the first `joined`.
     */
    join(): Promise<Joined>;
    /**
     * Leaves the room and forgets it: pending sends are rejected and its saved
     * position is dropped. `client.room(name)` afterwards is a fresh room.
     */
    leave(): void;
    /**
     * Sends a message. Resolves with the server's ack once it is stored; retried
     * with the same id through reconnects and retryable errors until then or the
     * client's `sendTimeout`. Pass your own `id` (see `messageId`) to recognise
     * the message when it comes back, or to retry one that timed out.
     */
    send(text: string, options?: {
        id?: string;
    }): Promise<Ack>;
    /** A page of the room's history (the room must be joined). */
    history(query?: HistoryQuery): Promise<History>;
    /** Tells the members that this user is typing (at most once a second). */
    typing(): void;
    /** @internal Whether the application wants the room joined. */
    get isWanted(): boolean;
    /** @internal A new connection is up: join, resuming from the position held. */
    sendJoin(): void;
    /** @internal The connection is gone. */
    connectionLost(): void;
    /** @internal The client stopped: whoever awaits the join hears why. */
    clientStopped(error: PalaverError): void;
    /** @internal `joined`, requested or not: the server restarts the stream. */
    onJoined(f: JoinedFrame): void;
    /** @internal The join was refused. */
    onJoinRefused(error: PalaverError): void;
    /** @internal A live or replayed message: drop what was delivered, fill what was skipped. */
    onMessage(f: MessageFrame): void;
    /** @internal One change, as it happens (a small room). */
    onPresence(user: string, state: PresenceState): void;
    /** @internal Changes of a big room, coalesced: apply `joined`, then `left`; the count is the server's. */
    onPresenceBatch(f: PresenceBatchFrame): void;
    private apply;
    private membersChanged;
    /** @internal An error about this room: a refused request, or a send's retryable error (it is retried). */
    onError(error: PalaverError): void;
    private accept;
    private deliver;
    private drainHeld;
    /** Reads history after the last delivered seq until the held messages connect. */
    private fill;
    /** What is missing up to `seq` is gone from the server too: say so, go on after it. */
    private skipTo;
    private moveTo;
    private failJoin;
    private toMessage;
}
