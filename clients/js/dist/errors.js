// The one error type the client reports: server error frames, refused close
// codes and the client's own refusals share it.
/** An error from the server (its `code`, e.g. `forbidden`) or from the client (`timeout`, `disconnected`, `closed`, `frame_too_large`, `unauthorized`, `closed_1009` …). */
export class PalaverError extends Error {
    /** Stable code: the server's error code, or one of the client's. */
    code;
    /** Whether trying again later can succeed. */
    retryable;
    /** The request the server's error refers to (a message id or a frame type). */
    ref;
    constructor(code, message, retryable = false, ref) {
        super(message);
        this.name = 'PalaverError';
        this.code = code;
        this.retryable = retryable;
        this.ref = ref;
    }
}
