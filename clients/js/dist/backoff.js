// Reconnect and retry delays: exponential with full jitter, so that thousands
// of clients dropped at once by one node do not come back in step.
/** A delay in `[0, min(maxDelay, minDelay * 2^attempt))` milliseconds, uniformly. */
export function fullJitter(attempt, minDelay, maxDelay, random = Math.random) {
    return random() * backoffCeiling(attempt, minDelay, maxDelay);
}
/** The largest delay `fullJitter` can choose for an attempt. */
export function backoffCeiling(attempt, minDelay, maxDelay) {
    return Math.min(maxDelay, minDelay * 2 ** Math.min(attempt, 30));
}
