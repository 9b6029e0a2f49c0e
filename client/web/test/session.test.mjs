// The session's acknowledgements (docs/PROTOCOL.md §5), driven by hand.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Session } from "../src/session.js";
import { Sender } from "../src/connection.js";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const until = async (cond) => {
  for (let i = 0; i < 200 && !cond(); i++) await sleep(5);
  assert.ok(cond(), "condition not met in time");
};

// A handler that returns after finish ended the session stream (the server
// asked the client to go: handlers run on until the connection closes)
// records an ack the ended stream cannot carry: it stays pending for the
// next connection's resume, and nothing is written after the FIN.
test("an ack recorded after finish waits for the next connection", async () => {
  const conn = { params: { ackDelay: 1 } };
  const st = { fin: false, writesAfter: 0 };
  const writable = {
    getWriter: () => ({
      write: async () => {
        if (st.fin) st.writesAfter++;
      },
      close: async () => {
        st.fin = true;
      },
    }),
  };
  const s = new Session({}, "s");
  s.conn = conn;
  s.send = new Sender(writable, () => {});
  s.ack("room/a", { epoch: "1", seq: 6 });
  await s.finish(conn); // the goodbye: last acks, then FIN

  s.ack("room/a", { epoch: "1", seq: 7 });
  await until(() => s.ackTimer === null); // flushAcks has run
  assert.deepEqual(s.acks.get("room/a"), { epoch: "1", seq: 7 }, "the ack is kept for the next connection");
  assert.equal(s.ackFrames().length, 1, "resume sends it");
  assert.ok(st.fin);
  assert.equal(st.writesAfter, 0, "nothing after the FIN");
});
