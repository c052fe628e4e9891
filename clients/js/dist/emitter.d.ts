/** Subscribes to named events whose payload types are given by `Events`. */
export declare class Emitter<Events extends {
    [name: string]: unknown;
}> {
    private listeners;
    /** Calls `listener` on every `event`; returns a function that unsubscribes. */
    on<K extends keyof Events>(event: K, listener: (payload: Events[K]) => void): () => void;
    /** Calls `listener` on the next `event` only. */
    once<K extends keyof Events>(event: K, listener: (payload: Events[K]) => void): () => void;
    /** Removes a listener added with `on`. */
    off<K extends keyof Events>(event: K, listener: (payload: Events[K]) => void): void;
    /** Calls every listener of `event`. A throwing listener cannot break the client's bookkeeping: its error is rethrown on its own. */
    protected emit<K extends keyof Events>(event: K, payload: Events[K]): void;
}
