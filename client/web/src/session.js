// One business session ("classroom", "chat"...): one stream on the
// connection carrying its subscriptions, their pushes, acks and publishes
// (docs/PROTOCOL.md §3.2, §5.7, §6), and the repair streams of its channels
// (§3.3). A port of the Go SDK's client/session.go and client/repair.go.
import { Class } from "./gen/quicpush_pb.js";
import { FrameReader, MaxMessageSize, encodeFrames, frame, validateChannel, validateID } from "./frame.js";
import { ErrorCode, NotSentError, QuicpushError } from "./errors.js";
import { Channel } from "./channel.js";
import { Sender, SendOrder } from "./connection.js";
import { overrideParams } from "./params.js";

const encoder = new TextEncoder();
/** How many ack delays a pending ack may wait while the session keeps handling messages. */
const MAX_ACK_HOLD = 5;

function randomID() {
  const b = crypto.getRandomValues(new Uint8Array(12));
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** Subscription is an active subscription; close() ends it. */
export class Subscription {
  constructor(session, ch) {
    this.s = session;
    this.ch = ch;
    this.channel = ch.name;
  }
  /** position is the last position queued for the handler (epoch string, seq). */
  get position() {
    return { epoch: this.ch.epoch.toString(), seq: this.ch.queued };
  }
  /** close ends the subscription; messages not yet handled are not handed over. */
  close() {
    const s = this.s;
    if (s.channels.get(this.ch.name) === this.ch) {
      s.channels.delete(this.ch.name);
      s.c.release(this.ch.name);
      s.send?.send(frame("unsubscribe", { channel: this.ch.name }));
    }
    this.ch.close();
  }
}

export class Session {
  constructor(client, name) {
    this.c = client;
    this.name = name;
    this.conn = null; // the connection its stream is on (or being opened on)
    this.params = null;
    this.send = null;
    this.readDone = Promise.resolve();
    this.channels = new Map();
    this.nextReq = 0;
    this.subReqs = new Map(); // subscribe request id -> channel
    this.subWait = new Map(); // channel -> {resolve, reject} of a waiting subscribe
    this.pubs = new Map(); // request id -> pending publish
    this.acks = new Map(); // channel -> position
    this.ackTimer = null;
  }

  /** resume opens the session's stream on conn and replays its state: subscribes from positions, acks, unacknowledged publishes. */
  async resume(conn) {
    if (this.conn === conn || !conn.alive()) return;
    this.conn = conn;
    let st;
    try {
      st = await conn.openStream(SendOrder.session);
    } catch {
      conn.close(0, "");
      return;
    }
    if (this.conn !== conn || !conn.alive()) return;
    this.params = conn.params;
    this.send = new Sender(st.writable, () => conn.close(0, ""));
    const frames = [frame("sessionOpen", { name: this.name })];
    for (const ch of this.channels.values()) frames.push(this.subscribeFrame(ch));
    frames.push(...this.ackFrames());
    for (const [id, p] of this.pubs) {
      if (p.frame.body.value.class === Class.DROPPABLE) {
        // Never sent twice: a droppable message may be lost, not doubled.
        this.pubs.delete(id);
        p.reject(new NotSentError());
        continue;
      }
      frames.push(p.frame);
    }
    if (this.send.send(...frames)) this.acks.clear();
    this.readDone = this.read(conn, new FrameReader(st.readable));
  }

  detach(conn) {
    if (this.conn !== conn) return;
    this.conn = null;
    this.send = null;
    for (const ch of this.channels.values()) ch.onDisconnect();
  }

  /** read handles the frames the server sends on the session stream. */
  async read(conn, r) {
    try {
      for (;;) {
        const f = await r.read();
        if (!f) return;
        const v = f.body.value;
        switch (f.body.case) {
          case "push":
            this.channels.get(v.channel)?.onPush(v, false);
            break;
          case "headNotice":
            this.channels.get(v.channel)?.onHeadNotice(v);
            break;
          case "shed":
            this.channels.get(v.channel)?.onShedNotice(Number(v.count));
            break;
          case "sessionOpened":
            this.params = overrideParams(conn.params, v);
            break;
          case "subscribed": {
            this.subReqs.delete(Number(v.requestId));
            this.channels.get(v.channel)?.onSubscribed(conn, this.params, v);
            this.answerSubscribe(v.channel, null);
            break;
          }
          case "publishAck":
            this.completePublish(Number(v.requestId), {
              channel: v.channel,
              epoch: v.epoch.toString(),
              seq: Number(v.seq),
              duplicate: v.duplicate,
              dropped: v.dropped,
            });
            break;
          case "error":
            this.onError(conn, QuicpushError.fromFrame(v), Number(v.requestId));
            break;
          default:
            conn.close(ErrorCode.FRAME_UNEXPECTED, `${f.body.case} frame on a session stream`);
            return;
        }
      }
    } catch (err) {
      if (err instanceof QuicpushError && !err.remote) conn.close(err.code, err.detail);
    }
  }

  onError(conn, e, requestId) {
    const channel = this.subReqs.get(requestId);
    this.subReqs.delete(requestId);
    const p = this.pubs.get(requestId);
    const retryable = e.code === ErrorCode.RATE_LIMITED || e.code === ErrorCode.STORE_UNAVAILABLE;
    const wait = Math.max(e.retryAfterMs, 50);
    if (channel !== undefined && retryable) {
      setTimeout(() => this.resubscribe(conn, channel), wait);
    } else if (channel !== undefined) {
      this.refused(channel, e);
    } else if (p && retryable) {
      // Not stored: send it again after the server's hint.
      setTimeout(() => this.resend(conn, requestId), wait);
    } else if (p) {
      this.completePublish(requestId, null, e);
    } else {
      this.c.log("warn", "server error", { session: this.name, err: e });
    }
  }

  /** refused ends a subscription the server will not serve: a waiting subscribe gets the error, a resumed one goes to onError. */
  refused(channel, e) {
    const ch = this.channels.get(channel);
    if (ch) {
      this.channels.delete(channel);
      this.c.release(channel);
    }
    const wait = this.subWait.get(channel);
    this.subWait.delete(channel);
    if (ch) ch.close();
    if (wait) {
      wait.reject(e);
      return;
    }
    if (!ch) return;
    this.c.log("warn", "subscription refused", { channel, err: e });
    ch.onError?.(e);
  }

  /** stop ends a subscription whose handler failed with err. */
  stop(ch, err) {
    if (this.channels.get(ch.name) === ch) {
      this.channels.delete(ch.name);
      this.c.release(ch.name);
      this.send?.send(frame("unsubscribe", { channel: ch.name }));
    }
    ch.close();
    if (ch.onError) ch.onError(err);
    else this.c.log("error", "handler failed: subscription ended", { channel: ch.name, err });
  }

  resubscribe(conn, channel) {
    const ch = this.channels.get(channel);
    if (ch && this.conn === conn && this.send) this.send.send(this.subscribeFrame(ch));
  }

  subscribeFrame(ch) {
    this.nextReq++;
    this.subReqs.set(this.nextReq, ch.name);
    return ch.subscribeFrame(this.nextReq);
  }

  /**
   * subscribe hands every message of channel to handler (which may be
   * async), in order, each once. It resolves once the server accepted the
   * subscription, on this connection or a later one.
   * opts: since (start after this seq when no position is saved), onGap,
   * onShed, onError, signal (an AbortSignal that stops waiting).
   */
  async subscribe(channel, handler, opts = {}) {
    validateChannel(channel);
    this.c.checkOpen();
    const ch = new Channel(this, channel, handler, opts);
    const pos = await this.c.state.load(ch.key);
    if (pos) {
      ch.epoch = BigInt(pos.epoch);
      ch.queued = pos.seq;
      ch.havePos = true;
    } else if (opts.since !== undefined && opts.since !== null) {
      ch.queued = Number(opts.since);
      ch.havePos = true;
    }
    try {
      this.c.claim(channel, this.name);
    } catch (err) {
      ch.close();
      throw err;
    }
    this.channels.set(channel, ch);
    const sub = new Subscription(this, ch);
    const answered = new Promise((resolve, reject) => this.subWait.set(channel, { resolve, reject }));
    this.send?.send(this.subscribeFrame(ch));
    try {
      await this.c.until(answered, opts.signal);
    } catch (err) {
      this.subWait.delete(channel);
      sub.close();
      throw err;
    }
    return sub;
  }

  answerSubscribe(channel, err) {
    const wait = this.subWait.get(channel);
    this.subWait.delete(channel);
    if (wait) err ? wait.reject(err) : wait.resolve();
  }

  /**
   * ack records a handled position. Acks are cumulative; they go once the session has handled
   * nothing for the ack delay, or MAX_ACK_HOLD ack delays after the first pending one (as the Go SDK).
   */
  ack(channel, pos) {
    this.acks.set(channel, pos);
    this.ackLast = performance.now();
    if (!this.ackTimer && this.conn?.params) {
      this.ackFirst = this.ackLast;
      this.ackTimer = setTimeout(() => this.flushAcks(true), this.conn.params.ackDelay);
    }
  }

  /** flushAcks sends the pending acks; fromTimer: only once the session is quiet or held long enough. */
  flushAcks(fromTimer = false) {
    if (this.ackTimer) clearTimeout(this.ackTimer);
    this.ackTimer = null;
    if (!this.send || this.acks.size === 0) return; // sent on resume
    if (fromTimer) {
      const delay = this.conn.params.ackDelay;
      const now = performance.now();
      const wait = Math.min(delay - (now - this.ackLast), this.ackFirst + MAX_ACK_HOLD * delay - now);
      if (wait > 0) {
        this.ackTimer = setTimeout(() => this.flushAcks(true), wait); // still busy
        return;
      }
    }
    this.sendAcks();
  }

  /** ackFrames returns the pending acks as frames; they stay pending until a send takes them (sendAcks). */
  ackFrames() {
    const frames = [];
    for (const [channel, pos] of this.acks) {
      frames.push(frame("ack", { channel, epoch: BigInt(pos.epoch), seq: BigInt(pos.seq) }));
    }
    return frames;
  }

  /** sendAcks sends the pending acks; a stream that takes nothing (ended by finish, or failed) leaves them for resume. */
  sendAcks() {
    if (this.send.send(...this.ackFrames())) this.acks.clear();
  }

  /**
   * publish sends data (a string or bytes) to channel. Reliable (the
   * default): resolves once the server stored it durably, retried across
   * reconnects with the same client message id. droppable: resolves once
   * the server took it ({dropped} says a rate limit dropped it); never resent.
   * opts: id, droppable, critical, signal.
   */
  async publish(channel, data, opts = {}) {
    validateChannel(channel);
    this.c.checkOpen();
    const bytes = typeof data === "string" ? encoder.encode(data) : data;
    if (bytes.length > MaxMessageSize) {
      throw new QuicpushError(ErrorCode.MESSAGE_TOO_LARGE, `message of ${bytes.length} bytes exceeds ${MaxMessageSize}`);
    }
    const id = opts.id || randomID();
    validateID(id);
    const reqId = ++this.nextReq;
    const p = {
      frame: frame("publish", {
        requestId: BigInt(reqId),
        channel,
        data: bytes,
        class: opts.droppable ? Class.DROPPABLE : Class.RELIABLE,
        id,
        critical: !!opts.critical,
      }),
    };
    encodeFrames([p.frame]); // throws now rather than on the stream if it cannot be framed
    const done = new Promise((resolve, reject) => Object.assign(p, { resolve, reject }));
    this.pubs.set(reqId, p);
    this.send?.send(p.frame); // on failure the connection ends and resume resends it
    try {
      const res = await this.c.until(done, opts.signal);
      return { ...res, id };
    } finally {
      this.pubs.delete(reqId);
    }
  }

  resend(conn, requestId) {
    const p = this.pubs.get(requestId);
    if (p && this.conn === conn && this.send) this.send.send(p.frame);
  }

  completePublish(requestId, res, err) {
    const p = this.pubs.get(requestId);
    if (!p) return;
    this.pubs.delete(requestId);
    err ? p.reject(err) : p.resolve(res);
  }

  /** repair fetches from..to of ch over a new repair stream, so live pushes never wait behind it. */
  async repair(conn, ch, epoch, from, to) {
    let end = null;
    try {
      await readRepair(conn, { channel: ch.name, epoch, from: BigInt(from), to: BigInt(to) }, (p) => ch.onPush(p, true), (e) => (end = e));
    } catch (err) {
      if (err instanceof QuicpushError && err.code === ErrorCode.WRONG_EPOCH) {
        // The channel's history changed: a fresh subscribe reports the reset.
        conn.close(0, "");
      } else if (err instanceof QuicpushError && err.code === ErrorCode.FORBIDDEN) {
        this.refused(ch.name, err);
      }
      this.c.log("debug", "repair failed", { channel: ch.name, from, to, err });
    }
    ch.onRepairEnd(end);
  }

  /** finish sends the last acks and ends the session stream; resolves when the server ended its side. */
  finish(conn) {
    if (!this.send || this.conn !== conn) return Promise.resolve();
    if (this.ackTimer) {
      clearTimeout(this.ackTimer);
      this.ackTimer = null;
    }
    this.sendAcks();
    this.send.close();
    return this.readDone;
  }

  close() {
    if (this.ackTimer) clearTimeout(this.ackTimer);
    this.ackTimer = null;
    for (const ch of this.channels.values()) ch.close();
  }
}

/** readRepair sends one repair request and reads its answer: pushes, then RepairEnd or Error. */
export async function readRepair(conn, req, onPush, onEnd) {
  const st = await conn.openStream(SendOrder.repair);
  const w = st.writable.getWriter();
  w.write(encodeFrames([frame("repairRequest", req)])).catch(() => {});
  w.close().catch(() => {});
  const r = new FrameReader(st.readable);
  try {
    for (;;) {
      const f = await r.read();
      if (!f) throw new Error(`quicpush: repair stream of ${req.channel} ended without repair_end`);
      switch (f.body.case) {
        case "push":
          onPush(f.body.value);
          break;
        case "repairEnd":
          onEnd(f.body.value);
          return;
        case "error":
          throw QuicpushError.fromFrame(f.body.value);
        default:
          throw new QuicpushError(ErrorCode.FRAME_UNEXPECTED, `${f.body.case} frame on a repair stream`);
      }
    }
  } finally {
    r.cancel();
  }
}
