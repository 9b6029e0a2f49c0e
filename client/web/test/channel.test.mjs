// The per-channel state machine (docs/PROTOCOL.md §5), driven by hand.
import { test } from "node:test";
import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { Channel } from "../src/channel.js";
import { MemoryStore } from "../src/state.js";
import { Class, HeadNoticeSchema, PushSchema, RepairEndSchema, SubscribedSchema } from "../src/gen/quicpush_pb.js";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const params = { heartbeat: 15000, holeWait: 5, mergeWindow: 2, ackDelay: 1, repairBatch: 1000 };

function harness(handler = () => {}) {
  const repairs = [];
  const acks = [];
  const got = [];
  const stats = { duplicates: 0, gaps: 0, droppableShed: 0, copiesFirst: 0, copiesWasted: 0, seen: [], droppableBase() {}, droppableSeen(c, s) { this.seen.push(s); }, delivered() {} };
  const c = { opts: { bufferLimit: 10000 }, stats, state: new MemoryStore(), log() {}, url: "u", user: "alice" };
  const s = { c, name: "classroom", repair: (conn, ch, epoch, from, to) => repairs.push({ epoch, from, to }), ack: (name, pos) => acks.push(pos), stop() {} };
  const gaps = [];
  const ch = new Channel(s, "room/a", async (m) => {
    await handler(m);
    got.push(m.seq);
  }, { onGap: (g) => gaps.push(g) });
  return { ch, repairs, acks, got, gaps, c };
}

const push = (seq, epoch = 7n) => create(PushSchema, { channel: "room/a", epoch, seq: BigInt(seq) });
const subscribed = (o) => create(SubscribedSchema, { channel: "room/a", epoch: 7n, firstRetained: 1n, ...o });
const until = async (cond) => {
  for (let i = 0; i < 200 && !cond(); i++) await sleep(5);
  assert.ok(cond(), "condition not met in time");
};

test("in order, each once, saved then acknowledged", async () => {
  const h = harness();
  h.ch.onSubscribed({}, params, subscribed({ head: 0n, startAfter: 0n }));
  for (const s of [1, 2, 2, 3, 1]) h.ch.onPush(push(s), false);
  await until(() => h.got.length === 3);
  assert.deepEqual(h.got, [1, 2, 3]);
  assert.deepEqual(h.acks.at(-1), { epoch: "7", seq: 3 });
  assert.deepEqual(h.c.state.load(h.ch.key), { epoch: "7", seq: 3 });
  assert.equal(h.c.stats.duplicates, 2);
  assert.equal(h.repairs.length, 0);
});

test("a hole waits, then one repair covers up to the head", async () => {
  const h = harness(() => sleep(1)); // an async handler
  h.ch.onSubscribed({}, params, subscribed({ head: 0n, startAfter: 0n }));
  h.ch.onPush(push(1), false);
  h.ch.onPush(push(3), false);
  h.ch.onPush(push(5), false); // found within the merge window: same request
  assert.equal(h.repairs.length, 0, "no repair before the hole wait");
  await until(() => h.repairs.length === 1);
  assert.deepEqual(h.repairs[0], { epoch: 7n, from: 2, to: 5 });
  for (const s of [2, 3, 4, 5]) h.ch.onPush(push(s), true);
  h.ch.onRepairEnd(create(RepairEndSchema, { next: 6n, firstRetained: 1n, head: 5n, epoch: 7n }));
  await until(() => h.got.length === 5);
  assert.deepEqual(h.got, [1, 2, 3, 4, 5]);
  assert.equal(h.repairs.length, 1);
});

test("a suffix is pulled at once after subscribe, in pages", async () => {
  const h = harness();
  h.ch.havePos = true;
  h.ch.queued = 10;
  h.ch.epoch = 7n;
  h.ch.onSubscribed({}, { ...params, repairBatch: 16 }, subscribed({ head: 40n, startAfter: 10n }));
  assert.deepEqual(h.repairs[0], { epoch: 7n, from: 11, to: 26 });
  for (let s = 11; s <= 26; s++) h.ch.onPush(push(s), true);
  h.ch.onRepairEnd(create(RepairEndSchema, { next: 27n, firstRetained: 1n, head: 40n, epoch: 7n }));
  assert.deepEqual(h.repairs[1], { epoch: 7n, from: 27, to: 40 });
});

test("expired and reset gaps are reported, in order with the messages", async () => {
  const h = harness();
  h.ch.onSubscribed({}, params, subscribed({ head: 8n, startAfter: 0n, firstRetained: 5n }));
  assert.deepEqual(h.repairs[0], { epoch: 7n, from: 5, to: 8 });
  await until(() => h.gaps.length === 1);
  assert.deepEqual(h.gaps[0], { channel: "room/a", epoch: "7", from: 1, to: 4, reason: "expired" });

  const r = harness();
  r.ch.havePos = true;
  r.ch.epoch = 3n;
  r.ch.queued = 20;
  r.ch.onSubscribed({}, params, subscribed({ epoch: 9n, head: 2n, startAfter: 0n, reset: true }));
  await until(() => r.gaps.length === 1);
  assert.deepEqual(r.gaps[0], { channel: "room/a", epoch: "3", from: 21, to: 0, reason: "reset" });
  assert.deepEqual(r.repairs[0], { epoch: 9n, from: 1, to: 2 });
  assert.deepEqual(r.c.state.load(r.ch.key), { epoch: "9", seq: 0 });
});

test("a head notice pulls at once; droppables bypass the machine", async () => {
  const h = harness();
  h.ch.onSubscribed({}, params, subscribed({ head: 0n, startAfter: 0n }));
  h.ch.onHeadNotice(create(HeadNoticeSchema, { channel: "room/a", epoch: 7n, head: 4n }));
  assert.deepEqual(h.repairs[0], { epoch: 7n, from: 1, to: 4 });
  h.ch.onHeadNotice(create(HeadNoticeSchema, { channel: "room/a", epoch: 8n, head: 9n }));
  assert.equal(h.ch.head, 4, "another epoch's notice is ignored");
  h.ch.onPush(create(PushSchema, { channel: "room/a", class: Class.DROPPABLE, droppableSeq: 3n }), false);
  await until(() => h.got.length === 1);
  assert.deepEqual(h.got, [0]);
  assert.deepEqual(h.c.stats.seen, [3]);
  assert.equal(h.ch.queued, 0);
});
