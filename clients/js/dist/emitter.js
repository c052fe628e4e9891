// A small typed event emitter (no dependency on Node's or the DOM's).
/** Subscribes to named events whose payload types are given by `Events`. */
export class Emitter {
    listeners = new Map();
    /** Calls `listener` on every `event`; returns a function that unsubscribes. */
    on(event, listener) {
        let set = this.listeners.get(event);
        if (!set)
            this.listeners.set(event, (set = new Set()));
        set.add(listener);
        return () => this.off(event, listener);
    }
    /** Calls `listener` on the next `event` only. */
    once(event, listener) {
        const off = this.on(event, (payload) => {
            off();
            listener(payload);
        });
        return off;
    }
    /** Removes a listener added with `on`. */
    off(event, listener) {
        this.listeners.get(event)?.delete(listener);
    }
    /** Calls every listener of `event`. A throwing listener cannot break the client's bookkeeping: its error is rethrown on its own. */
    emit(event, payload) {
        const set = this.listeners.get(event);
        if (!set)
            return;
        for (const listener of [...set]) {
            try {
                listener(payload);
            }
            catch (e) {
                queueMicrotask(() => {
                    throw e;
                });
            }
        }
    }
}
