// One room as the application sees it: a stream of messages delivered once
// each, in sequence order, across reconnects, node changes and gaps; presence;
// history; sending. The connection itself belongs to the client (client.ts).

import { Emitter } from './emitter.js';
import { PalaverError } from './errors.js';
import type { HistoryFrame, JoinedFrame, MembersFrame, MessageFrame, PresenceBatchFrame, PresenceState, Since } from './protocol.js';
import type { Position, PositionStore } from './storage.js';

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
  gap: { room: string; epoch: string; from: number; to: number };
  error: PalaverError;
  [name: string]: unknown;
};

/** What a room needs from its client. */
export interface RoomLink {
  readonly connected: boolean;
  connect(): void;
  frame(frame: { type: 'join'; room: string; since?: Since } | { type: 'leave' | 'typing'; room: string }): void;
  awaitJoined(room: string): void;
  history(room: string, query: HistoryQuery): Promise<HistoryFrame>;
  members(room: string, query: { after?: string; limit?: number }): Promise<MembersFrame>;
  send(room: string, text: string, id?: string): Promise<Ack>;
  dropSends(room: string, why: PalaverError): void;
  forget(room: Room): void;
}

const GAP_PAGE = 200;

/** A room of one client; get it with `client.room(name)`. */
export class Room extends Emitter<RoomEvents> {
  /** The room's name. */
  readonly name: string;
  private position: Position | undefined;
  private wanted = false;
  private live = false;
  private memberSet = new Set<string>();
  private count = 0;
  private complete = true;
  private joinWaiters: { resolve: (j: Joined) => void; reject: (e: PalaverError) => void }[] = [];
  /** Messages that arrived past a gap, held until history fills it. */
  private held = new Map<number, Message>();
  private filling = false;
  /** Bumped whenever the stream restarts, so a stale gap fill is ignored. */
  private stream = 0;
  private lastTyping = 0;
  private lastJoined: Joined | undefined;

  /** @internal */
  constructor(
    name: string,
    private readonly link: RoomLink,
    private readonly store: PositionStore,
  ) {
    super();
    this.name = name;
    this.position = store.load(name);
  }

  /** Joined on the current connection: messages are flowing. */
  get joined(): boolean {
    return this.live;
  }

  /**
   * Users present in the room (sorted), as of `joined` plus presence since:
   * the whole list in a small room, the ones known so far in a big one (see
   * `membersComplete`).
   */
  get members(): string[] {
    return [...this.memberSet].sort();
  }

  /** How many users are present on every node (from the server, kept current by presence). */
  get memberCount(): number {
    return this.count;
  }

  /** Whether `members` is the whole list (false in a big room: page with `membersPage`). */
  get membersComplete(): boolean {
    return this.complete;
  }

  /**
   * A page of the room's members by name, read from the server (the room must
   * be joined). Page on with `after` set to the last name of the previous page.
   * Users it returns are added to `members`.
   */
  async membersPage(query: { after?: string; limit?: number } = {}): Promise<MembersPage> {
    if (!this.live) throw new PalaverError('not_joined', `${this.name} is not joined`, true);
    const page = await this.link.members(this.name, query);
    for (const user of page.members) this.memberSet.add(user);
    if (query.after === undefined && !page.more && this.memberSet.size === page.members.length) this.complete = true;
    return { room: this.name, members: page.members, more: page.more };
  }

  /** The epoch of the messages delivered, once known. */
  get epoch(): string | undefined {
    return this.position?.epoch;
  }

  /** The seq of the last message delivered (or of the room's head at the join). */
  get seq(): number {
    return this.position?.seq ?? 0;
  }

  /**
   * Enters the room (connecting the client if needed) and keeps it joined across
   * reconnects, resuming with `since`. Resolves on the first `joined`.
   */
  join(): Promise<Joined> {
    if (this.live && this.lastJoined) return Promise.resolve(this.lastJoined);
    const joined = new Promise<Joined>((resolve, reject) => this.joinWaiters.push({ resolve, reject }));
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
  leave(): void {
    if (this.wanted && this.link.connected) this.link.frame({ type: 'leave', room: this.name });
    this.wanted = false;
    this.live = false;
    this.stream++;
    this.held.clear();
    this.filling = false;
    this.failJoin(new PalaverError('left', `left ${this.name}`));
    this.link.dropSends(this.name, new PalaverError('left', `left ${this.name} before the message was sent`));
    this.position = undefined;
    this.link.forget(this);
  }

  /**
   * Sends a message. Resolves with the server's ack once it is stored; retried
   * with the same id through reconnects and retryable errors until then or the
   * client's `sendTimeout`. Pass your own `id` (see `messageId`) to recognise
   * the message when it comes back, or to retry one that timed out.
   */
  send(text: string, options: { id?: string } = {}): Promise<Ack> {
    if (!this.wanted) return Promise.reject(new PalaverError('not_joined', `join ${this.name} first`));
    return this.link.send(this.name, text, options.id);
  }

  /** A page of the room's history (the room must be joined). */
  async history(query: HistoryQuery = {}): Promise<History> {
    if (!this.live) throw new PalaverError('not_joined', `${this.name} is not joined`, true);
    const page = await this.link.history(this.name, query);
    return { room: this.name, epoch: page.epoch, messages: page.messages.map((m) => this.toMessage(page.epoch, m)), more: page.more };
  }

  /** Tells the members that this user is typing (at most once a second). */
  typing(): void {
    const now = Date.now();
    if (!this.live || now - this.lastTyping < 1000) return;
    this.lastTyping = now;
    this.link.frame({ type: 'typing', room: this.name });
  }

  // ---- Called by the client ----------------------------------------------

  /** @internal Whether the application wants the room joined. */
  get isWanted(): boolean {
    return this.wanted;
  }

  /** @internal A new connection is up: join, resuming from the position held. */
  sendJoin(): void {
    const frame: { type: 'join'; room: string; since?: Since } = { type: 'join', room: this.name };
    const p = this.position;
    if (p) frame.since = p.id !== undefined && p.seq > 0 ? { epoch: p.epoch, seq: p.seq, id: p.id } : { epoch: p.epoch, seq: p.seq };
    this.link.frame(frame);
    this.link.awaitJoined(this.name);
  }

  /** @internal The connection is gone. */
  connectionLost(): void {
    this.live = false;
    this.stream++;
    this.held.clear();
    this.filling = false;
  }

  /** @internal The client stopped: whoever awaits the join hears why. */
  clientStopped(error: PalaverError): void {
    this.failJoin(error);
  }

  /** @internal `joined`, requested or not: the server restarts the stream. */
  onJoined(f: JoinedFrame): void {
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
    const joined: Joined = {
      room: this.name,
      epoch: f.epoch,
      seq: f.seq,
      members: [...f.members].sort(),
      memberCount: this.count,
      membersMore: !this.complete,
      recovered: f.recovered,
    };
    this.lastJoined = joined;
    for (const w of this.joinWaiters.splice(0)) w.resolve(joined);
    this.emit('joined', joined);
    this.membersChanged();
  }

  /** @internal The join was refused. */
  onJoinRefused(error: PalaverError): void {
    this.wanted = false;
    this.live = false;
    this.failJoin(error);
    this.link.dropSends(this.name, error);
    this.emit('error', error);
  }

  /** @internal A live or replayed message: drop what was delivered, fill what was skipped. */
  onMessage(f: MessageFrame): void {
    if (!this.live) return;
    const m = this.toMessage(f.epoch, f);
    const p = this.position;
    if (!p || p.epoch !== m.epoch) {
      // A new epoch without a `joined` first: start over just before it.
      this.stream++;
      this.held.clear();
      this.filling = false;
      this.moveTo({ epoch: m.epoch, seq: m.seq - 1 });
    }
    this.accept(m);
  }

  /** @internal One change, as it happens (a small room). */
  onPresence(user: string, state: PresenceState): void {
    if (!this.live) return;
    this.apply(user, state);
    if (state === 'join') this.count++;
    if (state === 'leave') this.count = Math.max(0, this.count - 1);
    if (state !== 'typing') this.membersChanged();
  }

  /** @internal Changes of a big room, coalesced: apply `joined`, then `left`; the count is the server's. */
  onPresenceBatch(f: PresenceBatchFrame): void {
    if (!this.live) return;
    for (const user of f.joined) this.apply(user, 'join');
    for (const user of f.left) this.apply(user, 'leave');
    for (const user of f.typing) this.apply(user, 'typing');
    if (f.member_count !== undefined) this.count = f.member_count;
    if (f.truncated) this.complete = false;
    if (f.joined.length > 0 || f.left.length > 0 || f.member_count !== undefined) this.membersChanged();
  }

  private apply(user: string, state: PresenceState): void {
    if (state === 'join') this.memberSet.add(user);
    if (state === 'leave') this.memberSet.delete(user);
    this.emit('presence', { room: this.name, user, state });
  }

  private membersChanged(): void {
    this.emit('members', { room: this.name, count: this.count, complete: this.complete });
  }

  /** @internal An error about this room: a refused request, or a send's retryable error (it is retried). */
  onError(error: PalaverError): void {
    this.emit('error', error);
  }

  // ---- Ordering ------------------------------------------------------------

  private accept(m: Message): void {
    if (m.seq <= this.seq) return; // delivered already
    if (this.filling || m.seq > this.seq + 1) {
      this.held.set(m.seq, m);
      if (!this.filling) void this.fill();
      return;
    }
    this.deliver(m);
    this.drainHeld();
  }

  private deliver(m: Message): void {
    this.moveTo({ epoch: m.epoch, seq: m.seq, id: m.id });
    this.emit('message', m);
  }

  private drainHeld(): void {
    for (;;) {
      const next = this.held.get(this.seq + 1);
      if (!next) break;
      this.held.delete(next.seq);
      this.deliver(next);
    }
  }

  /** Reads history after the last delivered seq until the held messages connect. */
  private async fill(): Promise<void> {
    const stream = this.stream;
    this.filling = true;
    try {
      for (;;) {
        const page = await this.link.history(this.name, { after: this.seq, limit: GAP_PAGE });
        if (stream !== this.stream) return;
        if (page.epoch !== this.epoch) break; // the room restarted: a `joined` follows
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
      this.emit('error', e instanceof PalaverError ? e : new PalaverError('internal', String(e)));
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
  private skipTo(seq: number): void {
    const epoch = this.epoch as string;
    this.emit('gap', { room: this.name, epoch, from: this.seq + 1, to: seq });
    this.moveTo({ epoch, seq });
  }

  private moveTo(p: Position): void {
    this.position = p;
    this.store.save(this.name, p);
  }

  private failJoin(error: PalaverError): void {
    for (const w of this.joinWaiters.splice(0)) w.reject(error);
  }

  private toMessage(epoch: string, m: { seq: number; id: string; user: string; text: string; ts: number }): Message {
    return { room: this.name, epoch, seq: m.seq, id: m.id, user: m.user, text: m.text, ts: m.ts };
  }
}
