// Position stores: where a client keeps, per channel, the position it has
// handled, so a reloaded page goes on right after it (docs/PROTOCOL.md §5.6).
//
// A store has two methods, each may return a value or a Promise:
//   load(key) -> {epoch: string, seq: number} | null
//   save(key, pos)
// key is {server, user, session, channel}. Save is called after the handler
// returned and before the position is acknowledged; an app that wants its
// own effect and the position committed together implements a store over
// its own storage.

/** keyString joins a key's parts into one string (JSON, so no part can leak into another). */
export function keyString(key) {
  return JSON.stringify([key.server, key.user, key.session, key.channel]);
}

/** MemoryStore keeps positions in memory: a reload starts over. */
export class MemoryStore {
  constructor() {
    this.pos = new Map();
  }
  load(key) {
    return this.pos.get(keyString(key)) ?? null;
  }
  save(key, pos) {
    this.pos.set(keyString(key), { epoch: pos.epoch, seq: pos.seq });
  }
}

/**
 * LocalStorageStore keeps each position in localStorage under
 * prefix + keyString(key). localStorage writes are synchronous, so a
 * handler that records its effect synchronously and returns is saved in
 * the same task: a reload cannot come between the two.
 */
export class LocalStorageStore {
  constructor(prefix = "quicpush:pos:", storage = globalThis.localStorage) {
    if (!storage) throw new Error("quicpush: localStorage is not available here");
    this.prefix = prefix;
    this.storage = storage;
  }
  load(key) {
    const raw = this.storage.getItem(this.prefix + keyString(key));
    if (raw === null) return null;
    try {
      const p = JSON.parse(raw);
      if (typeof p.epoch === "string" && /^\d+$/.test(p.epoch) && Number.isSafeInteger(p.seq) && p.seq >= 0) {
        return { epoch: p.epoch, seq: p.seq };
      }
    } catch {
      // fall through: a damaged entry is no position
    }
    return null;
  }
  save(key, pos) {
    this.storage.setItem(this.prefix + keyString(key), JSON.stringify({ epoch: pos.epoch, seq: pos.seq }));
  }
}
