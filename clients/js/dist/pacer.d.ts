/** Frames per second and burst of a pace. */
export interface Rate {
    perSecond: number;
    burst: number;
}
/** A FIFO of encoded frames written to one socket no faster than its rate. */
export declare class Pacer {
    private readonly initial;
    private readonly write;
    private rate;
    private tokens;
    private last;
    private slowedAt;
    private queue;
    private timer;
    constructor(initial: Rate, write: (data: string) => void);
    /** Queues a frame; it is written now if the bucket allows. */
    push(data: string): void;
    /** The server refused a frame: write nothing for a while and go slower. */
    slowDown(): void;
    /** Drops what is queued and restores the pace (a new connection has a new budget). */
    reset(): void;
    private refill;
    private pump;
}
