/** A delay in `[0, min(maxDelay, minDelay * 2^attempt))` milliseconds, uniformly. */
export declare function fullJitter(attempt: number, minDelay: number, maxDelay: number, random?: () => number): number;
/** The largest delay `fullJitter` can choose for an attempt. */
export declare function backoffCeiling(attempt: number, minDelay: number, maxDelay: number): number;
