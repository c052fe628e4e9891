// Outgoing frames, paced by a token bucket below the server's per-connection
// frame budget (`--rate-limit`, 20/s with bursts of 40 by default). When the
// server still says `rate_limited` (it may be configured lower), the pace
// halves, at most once a second, so refusals stay few and never add up to the
// sustained flooding that the server closes with 1008.

/** Frames per second and burst of a pace. */
export interface Rate {
  perSecond: number;
  burst: number;
}

/** A FIFO of encoded frames written to one socket no faster than its rate. */
export class Pacer {
  private rate: number;
  private tokens: number;
  private last = Date.now();
  private slowedAt = 0;
  private queue: string[] = [];
  private timer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly initial: Rate,
    private readonly write: (data: string) => void,
  ) {
    this.rate = initial.perSecond;
    this.tokens = initial.burst;
  }

  /** Queues a frame; it is written now if the bucket allows. */
  push(data: string): void {
    this.queue.push(data);
    this.pump();
  }

  /** The server refused a frame: write nothing for a while and go slower. */
  slowDown(): void {
    const now = Date.now();
    if (now - this.slowedAt >= 1000) {
      this.rate = Math.max(1, this.rate / 2);
      this.slowedAt = now;
    }
    this.refill();
    this.tokens = 0;
  }

  /** Drops what is queued and restores the pace (a new connection has a new budget). */
  reset(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.queue = [];
    this.rate = this.initial.perSecond;
    this.tokens = this.initial.burst;
    this.last = Date.now();
  }

  private refill(): void {
    const now = Date.now();
    this.tokens = Math.min(this.initial.burst, this.tokens + ((now - this.last) / 1000) * this.rate);
    this.last = now;
  }

  private pump(): void {
    this.refill();
    while (this.queue.length > 0 && this.tokens >= 1) {
      this.tokens -= 1;
      this.write(this.queue.shift() as string);
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
