// Framing against the worked examples of docs/PROTOCOL.md §2.2.
import { test } from "node:test";
import assert from "node:assert/strict";
import { FrameReader, MaxFrameSize, decodeFrame, encodeFrame, encodeFrames, encodeVarint, frame, validateChannel } from "../src/frame.js";
import { ErrorCode } from "../src/errors.js";
import { Class, Start } from "../src/gen/quicpush_pb.js";

const hex = (b) => Buffer.from(b).toString("hex").match(/../g).join(" ");

function streamOf(bytes, chunk = bytes.length) {
  let off = 0;
  return new ReadableStream({
    pull(c) {
      if (off >= bytes.length) return c.close();
      c.enqueue(bytes.slice(off, off + chunk));
      off += chunk;
    },
  });
}

test("worked examples encode to the documented bytes", () => {
  const cases = [
    [frame("ping", { id: 1n }), "04 1a 02 08 01"],
    [frame("hello", { version: 1, features: 3n, token: "alice", deviceId: "d1" }), "11 0a 0f 08 01 18 03 22 05 61 6c 69 63 65 32 02 64 31"],
    [frame("subscribe", { requestId: 1n, channel: "room/a", start: Start.AFTER, after: 5n }), "10 5a 0e 08 01 12 06 72 6f 6f 6d 2f 61 18 01 28 05"],
    [frame("ack", { channel: "room/a", epoch: 7n, seq: 300n }), "0f 7a 0d 0a 06 72 6f 6f 6d 2f 61 10 07 18 ac 02"],
    [frame("publish", { requestId: 3n, channel: "room/a", data: new TextEncoder().encode("+1"), class: Class.DROPPABLE }), "13 82 01 10 08 03 12 06 72 6f 6f 6d 2f 61 1a 02 2b 31 20 01"],
    [frame("repairRequest", { channel: "room/a", epoch: 7n, from: 6n, to: 9n }), "11 a2 01 0e 0a 06 72 6f 6f 6d 2f 61 10 07 18 06 20 09"],
  ];
  for (const [f, want] of cases) assert.equal(hex(encodeFrame(f)), want, f.body.case);
});

test("varints use the shortest form", () => {
  assert.equal(hex(encodeVarint(63)), "3f");
  assert.equal(hex(encodeVarint(70)), "40 46");
  assert.equal(hex(encodeVarint(MaxFrameSize)), "80 01 04 00");
  assert.equal(hex(encodeVarint(1n << 40n)), "c0 00 01 00 00 00 00 00");
  assert.throws(() => encodeVarint(1n << 62n), RangeError);
});

test("reader takes frames split at every byte", async () => {
  const frames = [frame("ping", { id: 1n, padding: new Uint8Array(64) }), frame("pong", { id: 2n }), frame("push", { channel: "c", seq: 9n, data: new Uint8Array(20000) })];
  const bytes = encodeFrames(frames);
  for (const chunk of [1, 3, 7, bytes.length]) {
    const r = new FrameReader(streamOf(bytes, chunk));
    assert.equal((await r.read()).body.case, "ping");
    assert.equal((await r.read()).body.value.id, 2n);
    const p = await r.read();
    assert.equal(p.body.value.seq, 9n);
    assert.equal(p.body.value.data.length, 20000);
    assert.equal(await r.read(), null);
  }
});

test("a length over the cap is refused before the body is read", async () => {
  // The stream has only the prefix: reading the body would fail differently.
  const r = new FrameReader(streamOf(Uint8Array.of(0x80, 0x01, 0x04, 0x01)));
  await assert.rejects(r.read(), (e) => e.code === ErrorCode.FRAME_TOO_LARGE);
  const huge = new FrameReader(streamOf(Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)));
  await assert.rejects(huge.read(), (e) => e.code === ErrorCode.FRAME_TOO_LARGE);
});

test("bad frames get typed errors", async () => {
  assert.throws(() => decodeFrame(new Uint8Array()), (e) => e.code === ErrorCode.FRAME_UNKNOWN);
  assert.throws(() => decodeFrame(Uint8Array.of(0x42, 0x00)), (e) => e.code === ErrorCode.FRAME_UNKNOWN);
  assert.throws(() => decodeFrame(Uint8Array.of(0x1a, 0x01, 0x08)), (e) => e.code === ErrorCode.FRAME_MALFORMED);
  const cut = new FrameReader(streamOf(Uint8Array.of(0x04, 0x1a, 0x02)));
  await assert.rejects(cut.read(), /ended inside a frame/);
  assert.throws(() => encodeFrame(frame("push", { data: new Uint8Array(MaxFrameSize) })), (e) => e.code === ErrorCode.FRAME_TOO_LARGE);
});

test("channel names follow stream.ValidateChannel", () => {
  validateChannel("room/math-101");
  for (const bad of ["", "a b", "a\u00a0b", "a\u0007", "x".repeat(256), "\ud800"]) {
    assert.throws(() => validateChannel(bad), (e) => e.code === ErrorCode.BAD_REQUEST, JSON.stringify(bad));
  }
});
