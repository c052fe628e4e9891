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
export { Room } from './room.js';
export { PalaverError } from './errors.js';
export { messageId } from './ids.js';
export { fullJitter, backoffCeiling } from './backoff.js';
