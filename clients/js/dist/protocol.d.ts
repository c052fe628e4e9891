/** Where a client resumes a room: the epoch, the last sequence number held and that message's id. */
export interface Since {
    epoch: string;
    seq: number;
    /** `id` of the message held at `seq`; lets the server notice a history that came back behind. */
    id?: string;
}
/** A frame the client sends. */
export type ClientFrame = {
    type: 'join';
    room: string;
    since?: Since;
} | {
    type: 'leave';
    room: string;
} | {
    type: 'send';
    room: string;
    text: string;
    id: string;
} | {
    type: 'typing';
    room: string;
} | {
    type: 'history';
    room: string;
    before?: number;
    after?: number;
    limit?: number;
} | {
    type: 'members';
    room: string;
    after?: string;
    limit?: number;
} | {
    type: 'ping';
} | {
    type: 'auth';
    token: string;
};
/** The server's first frame. */
export interface WelcomeFrame {
    type: 'welcome';
    session: string;
    node: string;
    user: string;
    protocol: number;
}
/** Membership confirmed (or restarted, unsolicited, with `recovered: false`). */
export interface JoinedFrame {
    type: 'joined';
    room: string;
    epoch: string;
    seq: number;
    /** All members in a small room; the first page (by name) in a big one. */
    members: string[];
    /** Members on every node (older servers omit it). */
    member_count?: number;
    /** `members` is only the first page: read on with a `members` request. */
    members_more?: boolean;
    recovered: boolean;
}
/** A sequenced chat message, live or replayed. */
export interface MessageFrame {
    type: 'message';
    room: string;
    epoch: string;
    seq: number;
    id: string;
    user: string;
    text: string;
    ts: number;
}
/** What the `state` of a presence event says. */
export type PresenceState = 'join' | 'leave' | 'typing';
export interface PresenceFrame {
    type: 'presence';
    room: string;
    user: string;
    state: PresenceState;
}
export interface PresenceBatchFrame {
    type: 'presence_batch';
    room: string;
    joined: string[];
    left: string[];
    typing: string[];
    /** Members on every node when the batch was sent. */
    member_count?: number;
    /** More changed than the lists hold (each holds at most 100 users). */
    truncated?: boolean;
}
/** A page of a room's members, ascending by name. */
export interface MembersFrame {
    type: 'members';
    room: string;
    members: string[];
    more: boolean;
}
export interface AckFrame {
    type: 'ack';
    id: string;
    room: string;
    seq: number;
    duplicate: boolean;
}
/** One message of a history page (the page carries room and epoch). */
export interface HistoryEntry {
    seq: number;
    id: string;
    user: string;
    text: string;
    ts: number;
}
export interface HistoryFrame {
    type: 'history';
    room: string;
    epoch: string;
    messages: HistoryEntry[];
    more: boolean;
}
export interface ErrorFrame {
    type: 'error';
    code: string;
    message: string;
    ref?: string;
    retryable: boolean;
}
/** A frame the server sends. */
export type ServerFrame = WelcomeFrame | JoinedFrame | {
    type: 'left';
    room: string;
} | MessageFrame | PresenceFrame | PresenceBatchFrame | AckFrame | HistoryFrame | MembersFrame | {
    type: 'pong';
} | ErrorFrame;
/** Room names the server accepts. */
export declare const ROOM_NAME: RegExp;
/** Close codes of docs/protocol.md that the client acts on. */
export declare const Close: {
    readonly Normal: 1000;
    readonly GoingAway: 1001;
    readonly ProtocolError: 1002;
    readonly InvalidPayload: 1007;
    readonly PolicyViolation: 1008;
    readonly TooBig: 1009;
    readonly InternalError: 1011;
    readonly SlowConsumer: 1013;
    readonly HeartbeatTimeout: 4000;
    readonly Unauthorized: 4001;
};
