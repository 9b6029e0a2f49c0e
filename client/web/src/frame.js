// Framing (docs/PROTOCOL.md §2): every stream carries frames, each a QUIC
// varint length prefix and the protobuf encoding of quicpush.v1.Frame. A
// datagram holds one frame body without prefix.
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { FrameSchema } from "./gen/quicpush_pb.js";
import { ErrorCode, QuicpushError } from "./errors.js";

// Size limits, the same as stream/frame.go.
export const MaxMessageSize = 64 << 10;
export const MaxChannelLen = 255;
export const MaxIDLen = 128;
export const MaxFrameSize = MaxMessageSize + 1024;

export const Version = 1;
export const MinorVersion = 0;

// Feature bits exchanged in Hello and Welcome (stream/frame.go).
export const FeatureTokenRefresh = 1n << 0n;
export const FeatureDatagrams = 1n << 1n;
export const FeatureCriticalCopies = 1n << 2n;

/** frame builds a Frame from its body case and value, e.g. frame("ping", {id: 1n}). */
export function frame(kind, value) {
  return create(FrameSchema, { body: { case: kind, value } });
}

/** encodeVarint encodes n (a number or bigint below 2^62) as a QUIC varint, shortest form. */
export function encodeVarint(n) {
  const v = BigInt(n);
  if (v < 0n || v >= 1n << 62n) throw new RangeError(`varint out of range: ${n}`);
  if (v < 64n) return Uint8Array.of(Number(v));
  if (v < 16384n) return Uint8Array.of(0x40 | Number(v >> 8n), Number(v & 0xffn));
  if (v < 1n << 30n) {
    const x = Number(v);
    return Uint8Array.of(0x80 | (x >>> 24), (x >>> 16) & 0xff, (x >>> 8) & 0xff, x & 0xff);
  }
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, v | (3n << 62n));
  return b;
}

/** encodeFrame returns f length-prefixed, refusing frames over MaxFrameSize. */
export function encodeFrame(f) {
  const body = toBinary(FrameSchema, f);
  if (body.length > MaxFrameSize) {
    throw new QuicpushError(ErrorCode.FRAME_TOO_LARGE, `frame of ${body.length} bytes exceeds ${MaxFrameSize}`);
  }
  const prefix = encodeVarint(body.length);
  const out = new Uint8Array(prefix.length + body.length);
  out.set(prefix);
  out.set(body, prefix.length);
  return out;
}

/** encodeFrames concatenates several length-prefixed frames into one write. */
export function encodeFrames(frames) {
  const parts = frames.map(encodeFrame);
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** decodeFrame decodes one frame body (no prefix): FRAME_MALFORMED or FRAME_UNKNOWN on bad input. */
export function decodeFrame(body) {
  let f;
  try {
    f = fromBinary(FrameSchema, body);
  } catch (e) {
    throw new QuicpushError(ErrorCode.FRAME_MALFORMED, `cannot decode frame: ${e.message}`);
  }
  if (f.body.case === undefined) {
    throw new QuicpushError(ErrorCode.FRAME_UNKNOWN, "frame of unknown type");
  }
  return f;
}

/**
 * FrameReader reads length-prefixed frames from a ReadableStream of bytes.
 * The length is checked against the cap before the body is gathered.
 */
export class FrameReader {
  constructor(readable, maxSize = MaxFrameSize) {
    this.reader = readable.getReader();
    this.maxSize = maxSize;
    this.chunks = [];
    this.len = 0;
  }

  /** fill reads until n bytes are buffered; false at end of stream. */
  async fill(n) {
    while (this.len < n) {
      const { value, done } = await this.reader.read();
      if (done) return false;
      if (value.length) {
        this.chunks.push(value);
        this.len += value.length;
      }
    }
    return true;
  }

  peek() {
    return this.chunks[0][0];
  }

  take(n) {
    const first = this.chunks[0];
    let out;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      out = new Uint8Array(n);
      let off = 0;
      while (off < n) {
        const c = this.chunks[0];
        const k = Math.min(c.length, n - off);
        out.set(c.subarray(0, k), off);
        off += k;
        if (k === c.length) this.chunks.shift();
        else this.chunks[0] = c.subarray(k);
      }
    }
    this.len -= n;
    return out;
  }

  /**
   * read returns the next frame, or null at a clean end of stream between
   * frames. A stream that ends inside a frame throws; so do bad frames
   * (QuicpushError with FRAME_TOO_LARGE, FRAME_MALFORMED or FRAME_UNKNOWN).
   */
  async read() {
    if (!(await this.fill(1))) return null;
    const size = 1 << (this.peek() >> 6);
    if (!(await this.fill(size))) throw new Error("quicpush: stream ended inside a frame");
    const p = this.take(size);
    let n = BigInt(p[0] & 0x3f);
    for (let i = 1; i < size; i++) n = (n << 8n) | BigInt(p[i]);
    if (n > BigInt(this.maxSize)) {
      throw new QuicpushError(ErrorCode.FRAME_TOO_LARGE, `frame of ${n} bytes exceeds ${this.maxSize}`);
    }
    const len = Number(n);
    if (!(await this.fill(len))) throw new Error("quicpush: stream ended inside a frame");
    return decodeFrame(this.take(len));
  }

  /** cancel stops reading (STOP_SENDING on a WebTransport stream). */
  cancel(reason) {
    return this.reader.cancel(reason).catch(() => {});
  }
}

const hasCtlOrSpace = /[\p{Cc}\p{White_Space}]/u;

/** validateChannel checks a channel name as stream.ValidateChannel does. */
export function validateChannel(name) {
  const n = typeof name === "string" ? new TextEncoder().encode(name).length : 0;
  if (n === 0 || n > MaxChannelLen) {
    throw new QuicpushError(ErrorCode.BAD_REQUEST, `channel name must be 1 to ${MaxChannelLen} bytes`);
  }
  if (!name.isWellFormed()) throw new QuicpushError(ErrorCode.BAD_REQUEST, "channel name is not UTF-8");
  if (hasCtlOrSpace.test(name)) {
    throw new QuicpushError(ErrorCode.BAD_REQUEST, `channel name ${JSON.stringify(name)} has a space or control character`);
  }
}

/** validateID checks a client message id: at most MaxIDLen bytes. */
export function validateID(id) {
  if (new TextEncoder().encode(id).length > MaxIDLen) {
    throw new QuicpushError(ErrorCode.BAD_REQUEST, `message id longer than ${MaxIDLen} bytes`);
  }
}
