// One WebTransport session to the server and its control stream
// (docs/PROTOCOL.md §3.1): Hello/Welcome, Ping/Pong heartbeat, GoAway,
// token Refresh; datagrams and server-opened unidirectional streams when
// the Welcome enabled them.
import { Class } from "./gen/quicpush_pb.js";
import {
  FeatureCriticalCopies,
  FeatureDatagrams,
  FeatureTokenRefresh,
  FrameReader,
  MinorVersion,
  Version,
  decodeFrame,
  encodeFrames,
  frame,
} from "./frame.js";
import { ErrorCode, QuicpushError, codeName, isTerminal } from "./errors.js";
import { paramsFrom } from "./params.js";

// Send order between streams (higher goes first): control, then live sessions, then repairs.
export const SendOrder = { control: 2, session: 1, repair: 0 };

/** Sender writes frames to one stream, in order, without waiting; a failed write calls onError once. */
export class Sender {
  constructor(writable, onError) {
    this.w = writable.getWriter();
    this.onError = onError;
    this.ended = false;
  }
  send(...frames) {
    if (this.ended || frames.length === 0) return false;
    this.w.write(encodeFrames(frames)).catch((err) => this.fail(err));
    return true;
  }
  fail(err) {
    if (this.ended) return;
    this.ended = true;
    this.onError(err);
  }
  /** close ends the stream (FIN) after what was written. */
  close() {
    if (this.ended) return;
    this.ended = true;
    this.w.close().catch(() => {});
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * ticker calls fn every ms. Browsers throttle the timers of a hidden page,
 * down to once a minute after a few minutes, which would starve the
 * heartbeat (the server's idle timeout is 3 heartbeats); a dedicated
 * worker's timers are not throttled that way, so the ticks come from one
 * where the page may start it, and from setInterval otherwise.
 */
function ticker(ms, fn) {
  if (typeof Worker === "function" && typeof Blob === "function" && globalThis.URL?.createObjectURL) {
    try {
      const src = URL.createObjectURL(new Blob([`setInterval(() => postMessage(0), ${ms})`], { type: "text/javascript" }));
      const w = new Worker(src);
      URL.revokeObjectURL(src);
      w.onmessage = fn;
      return { clear: () => w.terminate() };
    } catch {
      // a Content-Security-Policy without blob: workers: plain timers
    }
  }
  const t = setInterval(fn, ms);
  return { clear: () => clearInterval(t) };
}

/** withTimeout rejects when ms pass before p settles. */
function withTimeout(p, ms, what) {
  let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`quicpush: ${what} timed out after ${ms} ms`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

function decodeBase64(s) {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

export class Connection {
  constructor(client, wt) {
    this.c = client;
    this.wt = wt;
    this.params = null;
    this.user = "";
    this.features = 0n;
    this.id = "";
    this.goAwayMs = 0;
    this.lastPong = Date.now();
    this.closeInfo = null; // {code, reason, remote} once the session has ended
    this.toldClose = null; // {code, reason} of an Error frame on the control stream
    this.closedByUs = false;
    this.timers = new Set();
    this.done = new Promise((resolve) => (this.resolveDone = resolve));
    wt.closed.then(
      (info) => this.ended({ code: info?.closeCode ?? 0, reason: info?.reason ?? "", remote: !this.closedByUs }),
      (err) => this.ended({ code: 0, reason: String(err?.message ?? err), remote: !this.closedByUs, error: err }),
    );
  }

  /**
   * open connects to the server, says Hello and waits for the Welcome, all
   * within timeoutMs; it throws a QuicpushError when the server refused us
   * with a protocol code.
   */
  static async open(client, timeoutMs) {
    const o = client.opts;
    const wtOpts = {};
    let hashes = o.serverCertificateHashes;
    if (typeof hashes === "function") hashes = await withTimeout(hashes(), timeoutMs, "getting the certificate hashes");
    if (hashes?.length) {
      wtOpts.serverCertificateHashes = hashes.map((h) => ({
        algorithm: "sha-256",
        value: typeof h === "string" ? decodeBase64(h) : h,
      }));
    }
    const wt = new WebTransport(client.url, wtOpts);
    const conn = new Connection(client, wt);
    try {
      await withTimeout(conn.hello(), timeoutMs, "connecting");
      return conn;
    } catch (err) {
      // A refusal arrives as the session's close code: give it a moment to land.
      await Promise.race([conn.done, sleep(100)]);
      const info = conn.closeInfo;
      conn.close(0, "");
      if (info && info.remote && info.code !== 0) {
        throw new QuicpushError(info.code, info.reason, { remote: true });
      }
      throw err;
    }
  }

  async hello() {
    await this.wt.ready;
    const st = await this.wt.createBidirectionalStream({ sendOrder: SendOrder.control });
    this.control = new Sender(st.writable, () => this.close(0, ""));
    const token = await this.c.token();
    this.control.send(
      frame("hello", {
        version: Version,
        minor: MinorVersion,
        features: this.c.opts.features,
        token,
        clientId: this.c.opts.clientId,
        deviceId: this.c.opts.deviceId,
      }),
    );
    const r = new FrameReader(st.readable);
    const f = await r.read();
    if (!f) throw new Error("quicpush: control stream ended before the welcome");
    if (f.body.case === "error") throw QuicpushError.fromFrame(f.body.value); // a refusal told on the stream
    if (f.body.case !== "welcome") {
      throw new QuicpushError(ErrorCode.FRAME_UNEXPECTED, `${f.body.case} frame instead of welcome`);
    }
    const w = f.body.value;
    this.params = paramsFrom(w);
    this.user = w.user;
    this.features = w.features;
    this.id = w.connectionId;
    this.lastPong = Date.now();
    this.readControl(r);
    this.heartbeat();
    if (this.features & FeatureTokenRefresh && this.c.opts.tokenSource) this.scheduleRefresh(w.tokenExpiresUnixMs);
    if (this.features & FeatureDatagrams) this.readDatagrams();
    if (this.features & FeatureCriticalCopies) this.readCopies();
  }

  async readControl(r) {
    let lastError = null;
    try {
      for (;;) {
        const f = await r.read();
        if (!f) {
          // An Error frame that ends the control stream is the server's
          // close, told here because browsers lose a session's close code.
          if (lastError) this.toldClose = { code: lastError.code, reason: lastError.message };
          break;
        }
        const v = f.body.value;
        lastError = f.body.case === "error" ? v : null;
        switch (f.body.case) {
          case "pong":
            this.lastPong = Date.now();
            break;
          case "goAway":
            this.c.log("info", "server asked to reconnect", { code: codeName(v.code), afterMs: v.reconnectAfterMs, msg: v.message });
            this.goAwayMs = Math.max(1, v.reconnectAfterMs);
            this.c.emitState("connecting", `goaway ${codeName(v.code)}`);
            await this.c.goodbye(this, 500);
            this.close(0, "going away");
            return;
          case "refreshed":
            this.scheduleRefresh(v.tokenExpiresUnixMs);
            break;
          case "error":
            this.c.log("warn", "server error", { err: QuicpushError.fromFrame(v) });
            break;
          default:
            this.close(ErrorCode.FRAME_UNEXPECTED, `${f.body.case} frame on the control stream`);
            return;
        }
      }
    } catch (err) {
      if (err instanceof QuicpushError && !err.remote) {
        this.close(err.code, err.detail);
        return;
      }
    }
    this.close(0, "");
  }

  /** heartbeat sends a padded Ping every interval; no Pong for 2.5 intervals means a stalled path. */
  heartbeat() {
    const every = this.params.heartbeat;
    const padding = new Uint8Array(64);
    let id = 0n;
    this.timers.add(
      ticker(every, () => {
        if (!this.alive()) return;
        if (Date.now() - this.lastPong > every * 2.5) {
          this.c.log("warn", "heartbeat timeout: reconnecting");
          this.close(ErrorCode.HEARTBEAT_TIMEOUT, "no pong");
          return;
        }
        id++;
        this.control.send(frame("ping", { id, padding }));
      }),
    );
  }

  /** scheduleRefresh asks the token source for a new token at four fifths of the token's remaining life. */
  scheduleRefresh(expiresUnixMs) {
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    const exp = Number(expiresUnixMs);
    if (exp <= 0 || !this.alive()) return;
    const due = Math.max(((exp - Date.now()) * 4) / 5, 1000);
    this.refreshTimer = setTimeout(async () => {
      try {
        const token = await this.c.opts.tokenSource();
        this.control.send(frame("refresh", { token }));
      } catch (err) {
        this.c.log("warn", "cannot get a fresh token", { err });
      }
      this.scheduleRefresh(exp); // again later if no Refreshed re-arms it first
    }, due);
    this.timers.add({ clear: () => clearTimeout(this.refreshTimer) });
  }

  /** readDatagrams takes droppable pushes (and critical copies) that came as datagrams, one Frame each. */
  async readDatagrams() {
    const reader = this.wt.datagrams.readable.getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        let f;
        try {
          f = decodeFrame(value);
        } catch {
          this.close(ErrorCode.FRAME_MALFORMED, "undecodable datagram");
          return;
        }
        const p = f.body.case === "push" ? f.body.value : null;
        if (!p || (p.class !== Class.DROPPABLE && !p.critical)) {
          this.close(ErrorCode.FRAME_UNEXPECTED, "a datagram must hold a droppable or critical push");
          return;
        }
        this.deliverOutOfBand(p);
      }
    } catch (err) {
      if (this.alive()) this.c.log("error", "reading datagrams failed", { err });
    }
  }

  /** readCopies takes copies of critical pushes on unidirectional streams the server opened, one Push each. */
  async readCopies() {
    const streams = this.wt.incomingUnidirectionalStreams.getReader();
    try {
      for (;;) {
        const { value, done } = await streams.read();
        if (done) return;
        const r = new FrameReader(value);
        withTimeout(r.read(), 10000, "critical copy")
          .then((f) => {
            const p = f?.body.case === "push" ? f.body.value : null;
            if (p?.critical) this.deliverOutOfBand(p);
          })
          .catch(() => {})
          .finally(() => r.cancel());
      }
    } catch {
      // the session ended
    }
  }

  deliverOutOfBand(p) {
    const ch = this.c.subscription(p.channel);
    if (!ch) return;
    if (p.critical && p.class === Class.RELIABLE) ch.onCopy(p);
    else ch.onPush(p, false);
  }

  /** openStream opens a bidirectional stream, or throws once the session has ended. */
  openStream(sendOrder) {
    return this.wt.createBidirectionalStream({ sendOrder });
  }

  ended(info) {
    if (this.closeInfo) return;
    if (this.toldClose) info = { ...info, ...this.toldClose, remote: true };
    this.closeInfo = info;
    for (const t of this.timers) t.clear();
    this.timers.clear();
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    this.resolveDone();
  }

  /** terminalError returns the server's reason for closing when reconnecting cannot help. */
  terminalError() {
    const i = this.closeInfo;
    if (i && i.remote && isTerminal(i.code)) return new QuicpushError(i.code, i.reason, { remote: true });
    return null;
  }

  alive() {
    return this.closeInfo === null;
  }

  close(code, reason) {
    if (this.closeInfo) return;
    this.closedByUs = true;
    try {
      this.wt.close({ closeCode: code, reason: reason.slice(0, 1000) });
    } catch {
      // already closed or never opened
    }
    this.ended(this.toldClose ? { ...this.toldClose, remote: true } : { code, reason, remote: false });
  }
}
