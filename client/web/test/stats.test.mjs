// The client's counters, as the student page shows them.
import { test } from "node:test";
import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { Stats } from "../src/client.js";
import { Channel } from "../src/channel.js";
import { MemoryStore } from "../src/state.js";
import { Class, PushSchema, SubscribedSchema } from "../src/gen/quicpush_pb.js";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test("droppables: handed over, missing, and what was missed while away", async () => {
  const stats = new Stats();
  const c = { opts: { bufferLimit: 10000 }, stats, state: new MemoryStore(), log() {}, url: "u", user: "u" };
  const s = { c, name: "s", repair() {}, ack() {}, stop() {} };
  const got = [];
  const ch = new Channel(s, "room/a", (m) => got.push(m), {});
  const params = { holeWait: 5, mergeWindow: 2, repairBatch: 100 };
  ch.onSubscribed({}, params, create(SubscribedSchema, { channel: "room/a", epoch: 7n, firstRetained: 1n, droppableSeq: 10n }));
  for (const d of [11, 12, 14, 17]) ch.onPush(create(PushSchema, { channel: "room/a", class: Class.DROPPABLE, droppableSeq: BigInt(d) }), false);
  ch.onPush(create(PushSchema, { channel: "room/a", epoch: 7n, seq: 1n }), false);
  for (let i = 0; i < 100 && got.length < 5; i++) await sleep(2);
  assert.equal(got.length, 5);
  let snap = stats.snapshot("connected");
  assert.equal(snap.droppable, 4);
  assert.equal(snap.reliable, 1);
  assert.equal(snap.received, 5);
  assert.equal(snap.droppableMissing, 3, "13, 15 and 16 never came");
  // Reconnected: the server's counter went on to 20 meanwhile.
  ch.onSubscribed({}, params, create(SubscribedSchema, { channel: "room/a", epoch: 7n, firstRetained: 1n, head: 1n, startAfter: 1n, droppableSeq: 20n }));
  assert.equal(stats.snapshot("connected").droppableMissing, 6, "18, 19 and 20 went out while we were away");
  // The server restarted its counter: nothing more is known to be missing.
  ch.onSubscribed({}, params, create(SubscribedSchema, { channel: "room/a", epoch: 7n, firstRetained: 1n, head: 1n, startAfter: 1n, droppableSeq: 0n }));
  ch.onPush(create(PushSchema, { channel: "room/a", class: Class.DROPPABLE, droppableSeq: 1n }), false);
  snap = stats.snapshot("connected");
  assert.equal(snap.droppableMissing, 6);
  ch.close();
});
