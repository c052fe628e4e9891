// The wire frames of docs/protocol.md (version 1), as TypeScript types. No I/O.
/** Room names the server accepts. */
export const ROOM_NAME = /^[A-Za-z0-9_.:-]{1,64}$/;
/** Close codes of docs/protocol.md that the client acts on. */
export const Close = {
    Normal: 1000,
    GoingAway: 1001,
    ProtocolError: 1002,
    InvalidPayload: 1007,
    PolicyViolation: 1008,
    TooBig: 1009,
    InternalError: 1011,
    SlowConsumer: 1013,
    HeartbeatTimeout: 4000,
    Unauthorized: 4001,
};
