// The reliability state machine of one subscription, the same as the Go
// SDK's client/channel.go (docs/PROTOCOL.md §5): the epoch, the highest seq
// queued for the handler, the highest seq known to exist, a bounded buffer
// of early arrivals, and the hole timer that turns a missing seq into a
// repair request. Items go to the handler one at a time, in order; the
// position is saved after the handler returned (or its promise resolved),
// then acknowledged.
import { Class, Start } from "./gen/quicpush_pb.js";
import { frame } from "./frame.js";

const decoder = new TextDecoder();

/** Message is one message handed to a handler. */
export class Message {
  constructor(p, repaired) {
    this.channel = p.channel;
    /** epoch: the channel's epoch, a decimal string (64 bits do not fit a number). */
    this.epoch = p.epoch.toString();
    /** seq: the channel seq of a reliable message (1, 2, 3... in order, each once); 0 for a droppable one. */
    this.seq = Number(p.seq);
    this.droppable = p.class === Class.DROPPABLE;
    this.droppableSeq = Number(p.droppableSeq);
    /** data: the payload bytes (see text). */
    this.data = p.data;
    this.time = new Date(Number(p.timeUnixNs / 1000000n));
    this.from = p.from;
    this.id = p.id;
    /** repaired: it came over a repair stream, not the live push. */
    this.repaired = repaired;
    this.critical = p.critical;
  }
  /** text is data decoded as UTF-8. */
  get text() {
    return decoder.decode(this.data);
  }
}

export class Channel {
  constructor(session, name, handler, opts) {
    this.s = session;
    this.c = session.c;
    this.name = name;
    this.handler = handler;
    this.onGap = opts.onGap;
    this.onShed = opts.onShed;
    this.onError = opts.onError;

    this.epoch = 0n;
    this.queued = 0; // highest seq queued for the handler, or skipped by a gap
    this.head = 0; // highest seq known to exist
    this.havePos = false; // queued is a real position (saved, or given by since)
    this.buf = new Map(); // early arrivals: seq -> Message
    this.live = null; // the connection Subscribed arrived on
    this.params = null; // the session's parameters on live
    this.repairing = false;
    this.repairFrom = 0;
    this.holeTimer = null;
    this.ready = [];
    this.closed = false;
    this.wake = null;
    this.done = this.deliver();
  }

  get key() {
    return { server: this.c.url, user: this.c.user, session: this.s.name, channel: this.name };
  }

  /** subscribeFrame says where this channel starts on a (new) connection. */
  subscribeFrame(requestId) {
    const sub = { requestId: BigInt(requestId), channel: this.name };
    if (this.havePos || this.epoch !== 0n) {
      Object.assign(sub, { start: Start.AFTER, epoch: this.epoch, after: BigInt(this.queued) });
    }
    return frame("subscribe", sub);
  }

  onSubscribed(conn, params, sub) {
    const head = Number(sub.head);
    const startAfter = Number(sub.startAfter);
    if (sub.reset) {
      const gap = { channel: this.name, epoch: this.epoch.toString(), from: this.queued + 1, to: this.head > this.queued ? this.head : 0, reason: "reset" };
      this.epoch = sub.epoch;
      this.queued = startAfter;
      this.head = head;
      this.buf.clear();
      this.enqueue({ gap, save: { epoch: sub.epoch.toString(), seq: startAfter } });
    } else {
      if (this.epoch === 0n) this.epoch = sub.epoch;
      if (!this.havePos) {
        this.queued = startAfter;
        this.pruneBuf();
      }
      this.head = Math.max(this.head, head);
    }
    this.havePos = true;
    this.live = conn;
    this.params = params;
    this.c.stats.droppableBase(this.name, Number(sub.droppableSeq));
    this.skipExpired(Number(sub.firstRetained));
    this.evaluate(true);
  }

  /** skipExpired moves past the seqs before firstRetained: buffered ones are handed over, each missing run is an expired gap. */
  skipExpired(firstRetained) {
    const to = Math.min(firstRetained - 1, this.head);
    while (this.queued < to) {
      if (this.buf.has(this.queued + 1)) {
        const before = this.queued;
        this.drain();
        if (this.queued === before) return; // the handler queue is full: the next repair goes on
        continue;
      }
      let end = this.queued + 1;
      while (end < to && !this.buf.has(end + 1)) end++;
      const gap = { channel: this.name, epoch: this.epoch.toString(), from: this.queued + 1, to: end, reason: "expired" };
      this.queued = end;
      this.enqueue({ gap, save: { epoch: this.epoch.toString(), seq: end } });
    }
    this.drain();
  }

  /** onPush takes a message from the live push or a repair; true when it was new. */
  onPush(p, repaired) {
    if (this.closed) return false;
    const limit = this.c.opts.bufferLimit;
    if (p.class === Class.DROPPABLE) {
      // Never repaired and never waited for: a hole in droppable_seq is only counted.
      this.c.stats.droppableSeen(p.channel, Number(p.droppableSeq));
      if (this.ready.length >= limit) return false; // the handler is behind: thinned here too
      this.enqueue({ msg: new Message(p, repaired) });
      return true;
    }
    if (this.epoch === 0n && this.queued === 0) this.epoch = p.epoch; // first message after we subscribed
    const seq = Number(p.seq);
    if (p.epoch !== this.epoch || seq <= this.queued) {
      this.c.stats.duplicates++;
      return false; // another epoch's, or a duplicate
    }
    this.head = Math.max(this.head, seq);
    let fresh = false;
    if (this.ready.length >= limit) {
      // The handler is behind: drop, and fetch again once it has caught up.
    } else if (seq === this.queued + 1) {
      this.queued++;
      this.enqueue({ msg: new Message(p, repaired), save: { epoch: this.epoch.toString(), seq } });
      this.drain();
      fresh = true;
    } else if (!this.buf.has(seq) && this.buf.size < limit) {
      this.buf.set(seq, new Message(p, repaired));
      fresh = true;
    }
    if (!repaired) this.evaluate(false);
    return fresh;
  }

  /** onCopy takes the redundant copy of a critical push: same order rule, kept only if first. */
  onCopy(p) {
    if (this.onPush(p, false)) this.c.stats.copiesFirst++;
    else this.c.stats.copiesWasted++;
  }

  /** onHeadNotice learns the head from the server, which stopped pushing: pull up to it now. */
  onHeadNotice(n) {
    if (this.closed || (this.epoch !== 0n && n.epoch !== this.epoch)) return;
    if (this.epoch === 0n && this.queued === 0) this.epoch = n.epoch;
    this.head = Math.max(this.head, Number(n.head));
    this.evaluate(true);
  }

  /** onShedNotice queues the count of droppables the server shed for us. */
  onShedNotice(count) {
    this.c.stats.droppableShed += count;
    if (this.closed) return;
    const last = this.ready[this.ready.length - 1];
    if (last && last.shed) {
      last.shed.count += count; // one notice, however many came
      return;
    }
    this.enqueue({ shed: { channel: this.name, count } });
  }

  /** drain queues buffered messages that are now next in order. */
  drain() {
    const limit = this.c.opts.bufferLimit;
    while (this.ready.length < limit) {
      const m = this.buf.get(this.queued + 1);
      if (!m) break;
      this.buf.delete(this.queued + 1);
      this.queued++;
      this.enqueue({ msg: m, save: { epoch: this.epoch.toString(), seq: m.seq } });
    }
  }

  /**
   * pruneBuf drops buffered messages at or before queued, after queued
   * jumped ahead of them (the first Subscribed). Everywhere else queued
   * moves one by one through the buffer, so pruning on every drain would
   * only cost a walk of the whole buffer per message.
   */
  pruneBuf() {
    for (const seq of this.buf.keys()) if (seq <= this.queued) this.buf.delete(seq);
  }

  /**
   * evaluate starts a repair when seqs between queued and head are missing:
   * at once after a subscribe, a repair page or a head notice; after the
   * hole wait plus merge window for a hole seen in the live push (the
   * request reaches up to the head, so holes found meanwhile share it).
   */
  evaluate(now) {
    if (this.head <= this.queued || this.repairing || !this.live || this.closed) return;
    if (now) {
      this.stopHoleTimer();
      this.startRepair();
      return;
    }
    if (!this.holeTimer) {
      this.holeTimer = setTimeout(() => {
        this.holeTimer = null;
        this.evaluate(true);
      }, this.params.holeWait + this.params.mergeWindow);
    }
  }

  stopHoleTimer() {
    if (this.holeTimer) {
      clearTimeout(this.holeTimer);
      this.holeTimer = null;
    }
  }

  startRepair() {
    const from = this.queued + 1;
    const to = Math.min(this.head, this.queued + this.params.repairBatch);
    this.repairing = true;
    this.repairFrom = from;
    this.s.repair(this.live, this, this.epoch, from, to);
  }

  /** onRepairEnd is called when a repair stream ended, well (end set) or not. */
  onRepairEnd(end) {
    this.repairing = false;
    const progressed = this.queued >= this.repairFrom;
    if (end) {
      this.head = Math.max(this.head, Number(end.head));
      this.skipExpired(Number(end.firstRetained));
    }
    // Page on at once while pages bring messages; otherwise wait a hole wait so a failing repair does not spin.
    this.evaluate(end !== null && progressed);
  }

  onDisconnect() {
    this.live = null;
    this.stopHoleTimer();
  }

  enqueue(item) {
    this.ready.push(item);
    if (this.wake) {
      const w = this.wake;
      this.wake = null;
      w();
    }
  }

  /** deliver hands items to the application one at a time, then saves and acknowledges the position. */
  async deliver() {
    for (;;) {
      if (this.ready.length === 0) {
        await new Promise((resolve) => (this.wake = resolve));
      }
      if (this.closed) return;
      const item = this.ready.shift();
      if (!item) continue;
      try {
        if (item.shed) {
          if (this.onShed) await this.onShed(item.shed);
        } else if (item.gap) {
          this.c.stats.gaps++;
          if (this.onGap) await this.onGap(item.gap);
        } else {
          await this.handler(item.msg);
          this.c.stats.delivered(item.msg);
        }
      } catch (err) {
        // Not handled: the position stays before it, and the subscription ends.
        if (!this.closed) this.s.stop(this, err);
        return;
      }
      // Saved and acknowledged even if the channel closed meanwhile: the handler did return.
      if (item.save) {
        try {
          await this.c.state.save(this.key, item.save);
          this.s.ack(this.name, item.save);
        } catch (err) {
          // Not acknowledged either: the server's cursor must not run ahead of what a reload resumes from.
          this.c.log("error", "cannot save position", { channel: this.name, err });
        }
      }
    }
  }

  /** close stops the channel; a running handler is not interrupted. */
  close() {
    if (this.closed) return;
    this.closed = true;
    this.stopHoleTimer();
    if (this.wake) {
      const w = this.wake;
      this.wake = null;
      w();
    }
  }
}
