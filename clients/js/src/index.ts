// palaver-client: the JavaScript client of the Palaver chat server.
//
//   client.ts   the connection: reconnect with backoff, heartbeat, auth, requests, outbox
//   room.ts     one room: ordered, once-only delivery across reconnects; presence; history; send
//   pacer.ts    outgoing frames under the server's rate limit
//   storage.ts  room positions kept across page reloads
//   backoff.ts  full-jitter exponential delays
//   ids.ts      random message ids
//   protocol.ts the wire frames of docs/protocol.md
//   errors.ts   PalaverError
//   emitter.ts  typed events

export { Palaver } from './client.js';
export type {
  ClientEvents,
  ConnectionState,
  Credentials,
  Disconnect,
  PalaverOptions,
  WebSocketConstructor,
  WebSocketLike,
  Welcome,
} from './client.js';
export { Room } from './room.js';
export type { Ack, History, HistoryQuery, Joined, MembersChanged, MembersPage, Message, Presence, RoomEvents } from './room.js';
export { PalaverError } from './errors.js';
export { messageId } from './ids.js';
export { fullJitter, backoffCeiling } from './backoff.js';
export type { Rate } from './pacer.js';
export type { StorageLike, Position } from './storage.js';
export type { Since, PresenceState } from './protocol.js';
