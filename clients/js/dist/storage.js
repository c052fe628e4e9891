// Room positions kept across page reloads: any `Storage`-like object
// (`sessionStorage`, `localStorage`, or the application's own).
/** Reads and writes positions under `<prefix>:<room>`; a storage that throws (private mode, quota) is treated as absent. */
export class PositionStore {
    storage;
    prefix;
    constructor(storage, prefix) {
        this.storage = storage;
        this.prefix = prefix;
    }
    load(room) {
        if (!this.storage)
            return undefined;
        try {
            const raw = this.storage.getItem(this.key(room));
            if (!raw)
                return undefined;
            const p = JSON.parse(raw);
            if (typeof p.epoch !== 'string' || typeof p.seq !== 'number' || !Number.isSafeInteger(p.seq) || p.seq < 0)
                return undefined;
            return typeof p.id === 'string' ? { epoch: p.epoch, seq: p.seq, id: p.id } : { epoch: p.epoch, seq: p.seq };
        }
        catch {
            return undefined;
        }
    }
    save(room, position) {
        if (!this.storage)
            return;
        try {
            this.storage.setItem(this.key(room), JSON.stringify(position));
        }
        catch {
            /* full or unavailable: resuming after a reload is best effort */
        }
    }
    forget(room) {
        if (!this.storage)
            return;
        try {
            this.storage.removeItem(this.key(room));
        }
        catch {
            /* as above */
        }
    }
    key(room) {
        return `${this.prefix}:${room}`;
    }
}
