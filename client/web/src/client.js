// The client: one WebTransport session to the server, re-established with
// jittered backoff whenever it breaks, carrying the control stream, one
// stream per business Session and short-lived repair streams
// (docs/PROTOCOL.md §11). A port of the Go SDK's client/client.go.
import { FeatureCriticalCopies, FeatureDatagrams, FeatureTokenRefresh, validateChannel } from "./frame.js";
import { ClosedError, ErrorCode, QuicpushError, isTerminal } from "./errors.js";
import { Connection } from "./connection.js";
import { Session, readRepair } from "./session.js";
import { LocalStorageStore, MemoryStore } from "./state.js";
import { Message } from "./channel.js";

const firstAttempt = 500; // ms; each next attempt may take twice as long, up to dialTimeout
const stableAfter = 10000; // a connection this old resets the backoff
const closeGrace = 1000; // how long close waits for the server to take the last acks

/** Stats counts what the client handed over, repaired, and lost, since it started. */
export class Stats {
  constructor() {
    this.reliable = 0; // reliable messages handed to handlers
    this.repaired = 0; // of which came by repair
    this.droppable = 0; // droppable messages handed to handlers
    this.droppableShed = 0; // droppables the server shed for us (Shed notices)
    this.duplicates = 0; // reliable pushes dropped as already handled or of another epoch
    this.gaps = 0; // gaps reported
    this.copiesFirst = 0; // critical copies that arrived first
    this.copiesWasted = 0; // critical copies that lost the race
    this.connects = 0;
    this.dseq = new Map(); // channel -> droppable counter bookkeeping
  }

  /** delivered counts a message its handler took. */
  delivered(m) {
    if (m.droppable) {
      this.droppable++;
    } else {
      this.reliable++;
      if (m.repaired) this.repaired++;
    }
  }

  /** droppableBase starts (or restarts) counting a channel's droppables after a Subscribed. */
  droppableBase(channel, seq) {
    const e = this.dseq.get(channel);
    if (!e) {
      this.dseq.set(channel, { base: seq, highest: seq, seen: 0, lost: 0 });
      return;
    }
    e.lost += Math.max(0, e.highest - e.base - e.seen);
    // Past our highest: the ones between were pushed while we were away.
    // Below it: the server's counter started again; nothing more is known.
    if (seq > e.highest) e.lost += seq - e.highest;
    Object.assign(e, { base: seq, highest: seq, seen: 0 });
  }

  /** droppableSeen counts a droppable's number as it arrives (before the handler). */
  droppableSeen(channel, seq) {
    const e = this.dseq.get(channel);
    if (e && seq > e.base) {
      e.seen++;
      e.highest = Math.max(e.highest, seq);
    }
  }

  /** missing counts droppables numbered for us that never arrived (the shed ones included). */
  missing() {
    let n = 0;
    for (const e of this.dseq.values()) n += e.lost + Math.max(0, e.highest - e.base - e.seen);
    return n;
  }

  snapshot(state) {
    const droppableMissing = this.missing();
    return {
      state,
      received: this.reliable + this.droppable,
      reliable: this.reliable,
      repaired: this.repaired,
      droppable: this.droppable,
      droppableShed: this.droppableShed,
      droppableMissing,
      dropped: Math.max(droppableMissing, this.droppableShed),
      duplicates: this.duplicates,
      gaps: this.gaps,
      copiesFirst: this.copiesFirst,
      copiesWasted: this.copiesWasted,
      connects: this.connects,
    };
  }
}

const consoleLog = (level, msg, attrs) => {
  if (level === "warn" || level === "error") console[level](`quicpush: ${msg}`, attrs ?? "");
};

function randomHex(n) {
  return Array.from(crypto.getRandomValues(new Uint8Array(n)), (x) => x.toString(16).padStart(2, "0")).join("");
}

/**
 * Client is a quicpush client over WebTransport. Create one with
 * Client.connect(url, opts); it then reconnects by itself until close().
 * Events (an EventTarget): "state" with detail {state, reason}, state one
 * of "connecting", "connected", "closed".
 */
export class Client extends EventTarget {
  /**
   * connect opens the first connection and resolves once the server
   * welcomed the client, or rejects with the error of that one attempt.
   * opts:
   *   token, or tokenSource: async () => token (asked for every hello and before expiry)
   *   serverCertificateHashes: base64 strings or bytes (SHA-256 of the server's DER certificate),
   *     or an async function returning them, asked before every connection attempt (they rotate)
   *   state: a position store (default: localStorage where there is one, else memory)
   *   clientId, deviceId (default: random per client)
   *   dialTimeout (5000 ms), reconnectMin (100 ms), reconnectMax (10000 ms)
   *   bufferLimit (10000): early arrivals kept per channel, and handler queue bound
   *   features: the feature bits to announce (default: all this SDK has)
   *   onState(state, reason), log(level, msg, attrs)
   */
  static async connect(url, opts = {}) {
    const c = new Client(url, opts);
    const conn = await Connection.open(c, c.opts.dialTimeout);
    c.user = conn.user;
    c.attach(conn);
    c.run(conn);
    return c;
  }

  constructor(url, opts) {
    super();
    this.url = url;
    this.opts = {
      dialTimeout: 5000,
      reconnectMin: 100,
      reconnectMax: 10000,
      bufferLimit: 10000,
      features: FeatureTokenRefresh | FeatureDatagrams | FeatureCriticalCopies,
      clientId: "quicpush-web",
      ...opts,
    };
    this.opts.deviceId ||= randomHex(8);
    this.state = opts.state ?? (globalThis.localStorage ? new LocalStorageStore() : new MemoryStore());
    this.log = opts.log ?? consoleLog;
    this.stats = new Stats();
    this.user = "";
    this.cur = null;
    this.connState = "connecting";
    this.err = null;
    this.closed = false;
    this.sessions = new Map();
    this.owners = new Map(); // subscribed channel -> its session name
    this.waiters = new Set(); // resolvers woken when a connection is up or the client closes
    this.stopped = new AbortController();
    // A page going away sends the acks it holds back, so the server's cursors keep up.
    globalThis.addEventListener?.("pagehide", () => {
      for (const s of this.sessions.values()) s.flushAcks();
    });
  }

  /** session returns the business session called name, opening its stream on first use. */
  session(name) {
    let s = this.sessions.get(name);
    if (!s) {
      s = new Session(this, name);
      this.sessions.set(name, s);
      if (this.cur) s.resume(this.cur);
    }
    return s;
  }

  /** getStats returns the counters and the connection state. */
  getStats() {
    return this.stats.snapshot(this.connState);
  }

  /** connection returns the current connection's id and user, or null while disconnected. */
  connection() {
    return this.cur ? { id: this.cur.id, user: this.cur.user } : null;
  }

  async token() {
    if (!this.opts.tokenSource) return this.opts.token ?? "";
    return await this.opts.tokenSource();
  }

  /** emitState tells of a change of the connection state (not of the same state again). */
  emitState(state, reason = "") {
    if (this.connState === "closed" || (this.connState === state && this.stateEmitted)) return;
    this.stateEmitted = true;
    this.connState = state;
    this.opts.onState?.(state, reason);
    this.dispatchEvent(new CustomEvent("state", { detail: { state, reason } }));
  }

  attach(conn) {
    this.stats.connects++;
    this.cur = conn;
    for (const w of this.waiters) w();
    this.waiters.clear();
    for (const s of this.sessions.values()) s.resume(conn);
    this.emitState("connected", conn.id);
  }

  detach(conn) {
    if (this.cur === conn) this.cur = null;
    for (const s of this.sessions.values()) s.detach(conn);
    const i = conn.closeInfo;
    if (!this.closed) this.emitState("connecting", i ? `${i.remote ? "closed by server" : "closed"}${i.code ? ` (code ${i.code})` : ""}${i.reason ? `: ${i.reason}` : ""}` : "");
  }

  /** run keeps the client connected: reconnect with jittered exponential backoff (or the GoAway hint) and resume. */
  async run(conn) {
    const o = this.opts;
    let backoff = o.reconnectMin;
    for (;;) {
      const began = Date.now();
      await conn.done;
      this.detach(conn);
      if (this.closed) return;
      const term = conn.terminalError();
      if (term && !this.renewable(term)) return this.stop(term);
      let wait = backoff;
      if (conn.goAwayMs > 0) {
        // The server asked us to move: not a failure.
        wait = conn.goAwayMs;
        backoff = o.reconnectMin;
      } else if (Date.now() - began >= stableAfter) {
        backoff = o.reconnectMin;
      }
      let attempt = Math.min(firstAttempt, o.dialTimeout);
      for (;;) {
        // Jitter between half and all of the wait: clients coming back together spread out.
        await this.sleep(wait / 2 + Math.random() * (wait / 2));
        if (this.closed) return;
        try {
          conn = await Connection.open(this, attempt);
        } catch (err) {
          conn = null;
          attempt = Math.min(2 * attempt, o.dialTimeout);
          backoff = Math.min(2 * backoff, o.reconnectMax);
          if (err instanceof QuicpushError && isTerminal(err.code) && !this.renewable(err)) return this.stop(err);
          if (this.closed) return;
          this.log("warn", "reconnect failed", { err, retryIn: backoff });
          wait = backoff;
          continue;
        }
        backoff = Math.min(2 * backoff, o.reconnectMax);
        if (this.closed) {
          conn.close(0, "client closed");
          return;
        }
        this.attach(conn);
        break;
      }
    }
  }

  /** renewable: an UNAUTHORIZED refusal may pass with a new token from the token source. */
  renewable(err) {
    return err.code === ErrorCode.UNAUTHORIZED && !!this.opts.tokenSource;
  }

  /** stop ends the client after a terminal refusal: every waiting call fails with err. */
  stop(err) {
    this.log("error", "the server refused this client: not reconnecting", { err });
    this.err = err;
    this.closed = true;
    for (const s of this.sessions.values()) s.close();
    this.stopped.abort(err);
    this.emitState("closed", err.message);
  }

  sleep(ms) {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      this.stopped.signal.addEventListener("abort", () => (clearTimeout(t), resolve()), { once: true });
    });
  }

  checkOpen() {
    if (this.closed) throw this.err ?? new ClosedError();
  }

  /** until waits for p, failing when the client closes or signal aborts. */
  until(p, signal) {
    const races = [p];
    const stopped = this.stopped.signal;
    races.push(
      new Promise((_, reject) => {
        const fail = () => reject(this.err ?? new ClosedError());
        if (stopped.aborted) fail();
        else stopped.addEventListener("abort", fail, { once: true });
      }),
    );
    if (signal) {
      races.push(
        new Promise((_, reject) => {
          const fail = () => reject(signal.reason ?? new DOMException("aborted", "AbortError"));
          if (signal.aborted) fail();
          else signal.addEventListener("abort", fail, { once: true });
        }),
      );
    }
    return Promise.race(races);
  }

  /** current resolves with the connection, waiting for one. */
  async current(signal) {
    for (;;) {
      this.checkOpen();
      if (this.cur) return this.cur;
      await this.until(new Promise((resolve) => this.waiters.add(resolve)), signal);
    }
  }

  claim(channel, session) {
    const owner = this.owners.get(channel);
    if (owner !== undefined) {
      throw new Error(`quicpush: ${channel} is already subscribed (in session ${owner}); a channel is subscribed once per client`);
    }
    this.owners.set(channel, session);
  }

  release(channel) {
    this.owners.delete(channel);
  }

  /** subscription returns the channel's subscription, whichever session has it. */
  subscription(channel) {
    const s = this.sessions.get(this.owners.get(channel));
    return s?.channels.get(channel) ?? null;
  }

  /** goodbye ends every session stream on conn (last acks, FIN) and waits, at most grace ms, for the server's FINs. */
  async goodbye(conn, grace) {
    const finished = [...this.sessions.values()].map((s) => s.finish(conn));
    let timer;
    await Promise.race([Promise.all(finished), new Promise((r) => (timer = setTimeout(r, grace)))]);
    clearTimeout(timer);
  }

  /**
   * history reads channel's stored messages from..to (inclusive; to 0: up
   * to the head) of its current epoch, in pages. Seqs before the first
   * retained one are reported as an expired gap. Resolves {messages, gap}.
   */
  async history(channel, from = 1, to = 0, signal) {
    validateChannel(channel);
    from = Math.max(from, 1);
    const upTo = to === 0 ? Number.MAX_SAFE_INTEGER : to;
    const messages = [];
    let gap = null;
    let epoch = 0n; // the first page reads whatever is current
    for (;;) {
      const conn = await this.current(signal);
      let end = null;
      await readRepair(conn, { channel, epoch, from: BigInt(from), to: BigInt(upTo) }, (p) => messages.push(new Message(p, true)), (e) => (end = e));
      epoch = end.epoch;
      const head = Number(end.head);
      const next = Number(end.next);
      const firstRetained = Number(end.firstRetained);
      if (!gap && firstRetained > from) {
        gap = { channel, epoch: end.epoch.toString(), from, to: Math.min(firstRetained - 1, upTo, head), reason: "expired" };
      }
      if (next > Math.min(upTo, head) || next <= from) return { messages, gap };
      from = next;
    }
  }

  /** close ends the connection and stops reconnecting; handled positions stay saved. */
  async close() {
    if (this.closed) return;
    this.closed = true;
    const conn = this.cur;
    const running = [];
    for (const s of this.sessions.values()) {
      s.close();
      for (const ch of s.channels.values()) running.push(ch.done);
    }
    await Promise.all(running); // handlers that run finish, and their positions are saved
    if (conn) {
      await this.goodbye(conn, closeGrace);
      conn.close(0, "client closed");
    }
    this.stopped.abort(new ClosedError());
    this.emitState("closed", "client closed");
  }
}
