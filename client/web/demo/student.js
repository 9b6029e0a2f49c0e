// Student view: the room's reliable items as cards (kept across reloads,
// each once and in order), the droppable barrage as a scrolling strip, and
// live delivery counts.
import { connect, el, room, roomChannel, signinChannel, timeOf, user } from "./common.js";

const $ = (id) => document.getElementById(id);
const storeKey = `quicpush-demo:cards:${room}:${user}`;
const maxCards = 50;
let cards = JSON.parse(localStorage.getItem(storeKey) || "[]");
let client = null;

const labels = { signin: "Sign-in", quiz: "Quiz", "exercise-start": "Exercise started", "exercise-stop": "Exercise stopped" };

function render() {
  const box = $("cards");
  box.replaceChildren();
  if (cards.length === 0) box.append(el("div", { class: "empty" }, "Waiting for the teacher…"));
  for (const c of [...cards].reverse()) box.append(cardView(c));
}

function cardView(c) {
  const meta = el("div", { class: "meta" }, el("span", { class: "kind" }, labels[c.kind] ?? c.kind), el("span", {}, `#${c.seq} · ${c.time}`));
  if (c.repaired) meta.append(el("span", { class: "tag", title: "arrived over a repair stream" }, "repaired"));
  const card = el("div", { class: `card ${c.kind}` }, meta, el("div", { class: "title" }, c.title || ""));
  if (c.text) card.append(el("div", { class: "muted" }, c.text));
  if (c.kind === "quiz" && c.options?.length) {
    card.append(el("div", { class: "options" }, ...c.options.map((o) => el("span", {}, o))));
  }
  if (c.kind === "signin") {
    const btn = el("button", { class: "green" }, c.signed ? "Signed in ✓" : "Sign in");
    btn.disabled = !!c.signed;
    btn.addEventListener("click", async () => {
      btn.disabled = true;
      btn.textContent = "Signing in…";
      try {
        await client.session("classroom").publish(signinChannel, JSON.stringify({ user, signin: c.seq }), { id: `signin-${c.seq}-${user}` });
        c.signed = true;
        save();
        btn.textContent = "Signed in ✓";
      } catch (err) {
        btn.disabled = false;
        btn.textContent = "Sign in";
        console.warn(err);
      }
    });
    card.append(el("div", { class: "row", style: "margin-top:10px" }, btn));
  }
  return card;
}

function save() {
  localStorage.setItem(storeKey, JSON.stringify(cards));
}

/** onItem is the room's handler: it records the card synchronously, so the SDK saves the position right after. */
function onItem(m) {
  let item;
  try {
    item = JSON.parse(m.text);
  } catch {
    item = { kind: "note", title: m.text };
  }
  if (m.droppable) {
    flyBubble(item.text ?? m.text, m.from);
    return;
  }
  cards.push({ seq: m.seq, kind: item.kind, title: item.title, text: item.text, options: item.options, repaired: m.repaired, time: timeOf(m.time) });
  if (cards.length > maxCards) cards = cards.slice(-maxCards);
  save();
  render();
}

let lane = 0;
function flyBubble(text, from) {
  const strip = $("strip");
  const b = el("span", { class: "bubble" }, el("i", {}, from), text);
  b.style.left = `${strip.clientWidth + 10}px`;
  b.style.top = `${30 + (lane++ % 3) * 28}px`;
  strip.append(b);
  b.addEventListener("animationend", () => b.remove());
}

function showStats() {
  if (!client) return;
  const s = client.getStats();
  $("received").textContent = s.reliable;
  $("repaired").textContent = s.repaired;
  $("dropped").textContent = s.dropped;
  $("barrage").textContent = s.droppable;
  $("conns").textContent = s.connects;
}

render();
client = await connect($("state"));
window.demo = { client };
await client.session("classroom").subscribe(roomChannel, onItem, { since: 0 });
setInterval(showStats, 250);
showStats();
