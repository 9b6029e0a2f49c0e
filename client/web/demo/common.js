// Shared by the demo pages: read ?user= and ?room=, connect to the server
// the page was served with (config.json), show the connection state.
import { Client } from "../sdk/quicpush.js";

const params = new URLSearchParams(location.search);
/** user: in dev mode the token is the user name. */
export const user = params.get("user") || "guest";
export const room = params.get("room") || "math-101";
export const roomChannel = `room/${room}`;
export const signinChannel = `room/${room}/signin`;

async function config() {
  const res = await fetch("config.json", { cache: "no-store" });
  if (!res.ok) throw new Error(`config.json: ${res.status}`);
  return res.json();
}

/** connect keeps trying until the first connection is up; the client reconnects by itself after that. */
export async function connect(pill, opts = {}) {
  for (let wait = 250; ; wait = Math.min(wait * 2, 5000)) {
    try {
      const cfg = await config();
      const client = await Client.connect(cfg.url, {
        token: user,
        clientId: "quicpush-demo",
        // Asked before every connection attempt: the hashes rotate.
        serverCertificateHashes: async () => (await config()).certHashes,
        onState: (state, reason) => showState(pill, state, reason),
        ...opts,
      });
      showState(pill, "connected", "");
      return client;
    } catch (err) {
      showState(pill, "connecting", err.message);
      await new Promise((r) => setTimeout(r, wait));
    }
  }
}

export function showState(pill, state, reason) {
  pill.className = `pill ${state}`;
  pill.textContent = state;
  pill.title = reason || "";
}

/** el builds an element: el("div", {class: "x"}, "text", child...). */
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

export function timeOf(d) {
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

for (const e of document.querySelectorAll("[data-user]")) e.textContent = user;
for (const e of document.querySelectorAll("[data-room]")) e.textContent = room;
