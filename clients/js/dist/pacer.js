// Outgoing frames, paced by a token bucket below the server's per-connection
// frame budget (`--rate-limit`, 20/s with bursts of 40 by default). When the
// server still says `rate_limited` (it may be configured lower), the pace
// halves, at most once a second, so refusals stay few and never add up to the
// sustained flooding that the server closes with 1008.
/** A FIFO of encoded frames written to one socket no faster than its rate. */
export class Pacer {
    initial;
    write;
    rate;
    tokens;
    last = Date.now();
    slowedAt = 0;
    queue = [];
    timer;
    constructor(initial, write) {
        this.initial = initial;
        this.write = write;
        this.rate = initial.perSecond;
        this.tokens = initial.burst;
    }
    /** Queues a frame; it is written now if the bucket allows. */
    push(data) {
        this.queue.push(data);
        this.pump();
    }
    /** The server refused a frame: write nothing for a while and go slower. */
    slowDown() {
        const now = Date.now();
        if (now - this.slowedAt >= 1000) {
            this.rate = Math.max(1, this.rate / 2);
            this.slowedAt = now;
        }
        this.refill();
        this.tokens = 0;
    }
    /** Drops what is queued and restores the pace (a new connection has a new budget). */
    reset() {
        clearTimeout(this.timer);
        this.timer = undefined;
        this.queue = [];
        this.rate = this.initial.perSecond;
        this.tokens = this.initial.burst;
        this.last = Date.now();
    }
    refill() {
        const now = Date.now();
        this.tokens = Math.min(this.initial.burst, this.tokens + ((now - this.last) / 1000) * this.rate);
        this.last = now;
    }
    pump() {
        this.refill();
        while (this.queue.length > 0 && this.tokens >= 1) {
            this.tokens -= 1;
            this.write(this.queue.shift());
        }
        if (this.queue.length > 0 && this.timer === undefined) {
            const wait = Math.ceil(((1 - this.tokens) / this.rate) * 1000);
            this.timer = setTimeout(() => {
                this.timer = undefined;
                this.pump();
            }, wait);
        }
    }
}
