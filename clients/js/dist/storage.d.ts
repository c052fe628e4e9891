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
export declare class PositionStore {
    private readonly storage;
    private readonly prefix;
    constructor(storage: StorageLike | undefined, prefix: string);
    load(room: string): Position | undefined;
    save(room: string, position: Position): void;
    forget(room: string): void;
    private key;
}
