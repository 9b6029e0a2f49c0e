// Teacher view: reliable publishes (sign-in, quiz card, start/stop
// exercise) and a droppable barrage on the room's channel; the students'
// sign-ins come back on room/<room>/signin.
import { MemoryStore } from "../sdk/quicpush.js";
import { connect, el, roomChannel, signinChannel, timeOf } from "./common.js";

const $ = (id) => document.getElementById(id);
let first = true;

function log(kind, text, result) {
  const ul = $("log");
  if (first) ul.replaceChildren();
  first = false;
  ul.prepend(el("li", {}, result, el("span", {}, `${kind}: ${text}`), el("span", { class: "muted", style: "margin-left:auto" }, timeOf(new Date()))));
}

// The roster is rebuilt from the sign-in channel's history on every load.
const client = await connect($("state"), { state: new MemoryStore() });
window.demo = { client };
const session = client.session("classroom");

async function send(item, label) {
  try {
    const res = await session.publish(roomChannel, JSON.stringify(item));
    log(label, item.title, el("span", { class: "ok" }, `✓ #${res.seq}`));
  } catch (err) {
    log(label, item.title, el("span", { class: "err", title: err.message }, "✗"));
  }
}

$("signin").addEventListener("click", () => send({ kind: "signin", title: "Please sign in", text: "Tap the button to tell the teacher you are here." }, "sign-in"));
$("start").addEventListener("click", () => send({ kind: "exercise-start", title: "Exercise 3 · fractions", text: "15 minutes, work in pairs." }, "exercise"));
$("stop").addEventListener("click", () => send({ kind: "exercise-stop", title: "Pens down", text: "Exercise 3 is over." }, "exercise"));
$("quiz").addEventListener("click", () => {
  const options = $("options").value.split(",").map((s) => s.trim()).filter(Boolean);
  send({ kind: "quiz", title: $("question").value, options }, "quiz");
});
$("barrage-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = $("barrage").value.trim();
  if (!text) return;
  $("barrage").value = "";
  try {
    const res = await session.publish(roomChannel, JSON.stringify({ kind: "barrage", text }), { droppable: true });
    log("barrage", text, res.dropped ? el("span", { class: "drop", title: "over the channel's rate limit" }, "dropped") : el("span", { class: "ok" }, "✓"));
  } catch (err) {
    log("barrage", text, el("span", { class: "err", title: err.message }, "✗"));
  }
});

const signed = new Set();
await session.subscribe(signinChannel, (m) => {
  const who = JSON.parse(m.text).user ?? m.from;
  if (signed.has(who)) return;
  signed.add(who);
  $("signed-count").textContent = signed.size;
  $("roster").append(el("span", {}, who));
}, { since: 0 });
