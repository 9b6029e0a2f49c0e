// Protocol error codes (stream/errcode.go, docs/PROTOCOL.md §10): the same
// numbers travel in Error frames, WebTransport close codes and stream resets.
import { ErrorCode } from "./gen/quicpush_pb.js";

export { ErrorCode };

/** codeName returns the code's name as in the protocol docs, e.g. "SLOW_CONSUMER". */
export function codeName(code) {
  return ErrorCode[code] ?? `ERROR_0x${Number(code).toString(16)}`;
}

/** Reconnect range (0x1-0xff, and NO_ERROR): the client may reconnect and resume. */
export function isReconnect(code) {
  return code < 0x100;
}

/** Terminal range (0x100-0x1ff): reconnecting fails the same way until the cause is fixed. */
export function isTerminal(code) {
  return code >= 0x100 && code < 0x200;
}

/** QuicpushError is a protocol error, sent or received. */
export class QuicpushError extends Error {
  constructor(code, message = "", { remote = false, retryAfterMs = 0, channel = "" } = {}) {
    const side = remote ? "remote" : "local";
    super(message ? `quicpush: ${side} error ${codeName(code)}: ${message}` : `quicpush: ${side} error ${codeName(code)}`);
    this.name = "QuicpushError";
    this.code = code;
    this.remote = remote;
    this.retryAfterMs = retryAfterMs;
    this.channel = channel;
    this.detail = message;
  }

  /** fromFrame converts a received Error frame. */
  static fromFrame(e) {
    return new QuicpushError(e.code, e.message, { remote: true, retryAfterMs: e.retryAfterMs, channel: e.channel });
  }
}

/** NotSentError: a droppable publish whose connection broke before its ack; never sent twice. */
export class NotSentError extends Error {
  constructor() {
    super("quicpush: droppable message not acknowledged before the connection broke");
    this.name = "NotSentError";
  }
}

/** ClosedError: a call on a closed client. */
export class ClosedError extends Error {
  constructor(cause) {
    super(cause ? `quicpush: client closed: ${cause.message}` : "quicpush: client closed");
    this.name = "ClosedError";
    this.cause = cause;
  }
}
