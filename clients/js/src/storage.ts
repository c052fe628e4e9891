// Room positions kept across page reloads: any `Storage`-like object
// (`sessionStorage`, `localStorage`, or the application's own).

/** The part of the Web Storage API the client uses. */
export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** Where a room's stream was left: the epoch, the last seq delivered and that message's id. */
export interface Position {
  epoch: string;
  seq: number;
  id?: string;
}

/** Reads and writes positions under `<prefix>:<room>`; a storage that throws (private mode, quota) is treated as absent. */
export class PositionStore {
  constructor(
    private readonly storage: StorageLike | undefined,
    private readonly prefix: string,
  ) {}

  load(room: string): Position | undefined {
    if (!this.storage) return undefined;
    try {
      const raw = this.storage.getItem(this.key(room));
      if (!raw) return undefined;
      const p = JSON.parse(raw) as Partial<Position>;
      if (typeof p.epoch !== 'string' || typeof p.seq !== 'number' || !Number.isSafeInteger(p.seq) || p.seq < 0) return undefined;
      return typeof p.id === 'string' ? { epoch: p.epoch, seq: p.seq, id: p.id } : { epoch: p.epoch, seq: p.seq };
    } catch {
      return undefined;
    }
  }

  save(room: string, position: Position): void {
    if (!this.storage) return;
    try {
      this.storage.setItem(this.key(room), JSON.stringify(position));
    } catch {
      /* full or unavailable: resuming after a reload is best effort */
    }
  }

  forget(room: string): void {
    if (!this.storage) return;
    try {
      this.storage.removeItem(this.key(room));
    } catch {
      /* as above */
    }
  }

  private key(room: string): string {
    return `${this.prefix}:${room}`;
  }
}
