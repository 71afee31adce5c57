// streamgate dashboard: the live channels as cards, kept current by the node's event
// stream (/api/v1/events) and a poll of /api/v1/streams. Everything shown comes from
// the public API and is set as text, never as markup.
"use strict";

const POLL_MS = 5000;
const grid = document.getElementById("grid");
const template = document.getElementById("card");
const cards = new Map(); // channel_id -> { el, stream, thumbKey, tick }
let clockSkewMs = 0; // node clock minus browser clock, from the Date header
let clockSkewKnown = false;
let refreshTimer = null;

function setStatus(state, text) {
  const el = document.getElementById("status");
  el.dataset.state = state;
  el.textContent = text;
}

function duration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const pad = (n) => String(n).padStart(2, "0");
  return (h > 0 ? h + ":" + pad(m) : String(m)) + ":" + pad(s % 60);
}

function bitrate(kbps) {
  return kbps >= 1000 ? (kbps / 1000).toFixed(2) + " Mbit/s" : kbps + " kbit/s";
}

function field(card, cls, text) {
  const el = card.querySelector("." + cls);
  if (el.textContent !== text) el.textContent = text;
}

function makeCard(stream) {
  const el = template.content.firstElementChild.cloneNode(true);
  el.dataset.channelId = stream.channel_id;
  const img = el.querySelector("img");
  img.addEventListener("load", () => {
    img.hidden = false;
    el.querySelector(".placeholder").hidden = true;
  });
  img.addEventListener("error", () => {
    img.hidden = true;
    el.querySelector(".placeholder").hidden = false;
  });
  return { el, stream, thumbKey: null, tick: null };
}

function updateCard(entry, stream) {
  const el = entry.el;
  entry.stream = stream;
  field(el, "name", stream.name);
  el.querySelector(".name").title = stream.name;
  field(el, "resolution", stream.width && stream.height ? stream.width + "×" + stream.height : "–");
  field(el, "fps", stream.fps ? stream.fps.toFixed(stream.fps % 1 ? 2 : 0) : "–");
  field(el, "bitrate", bitrate(stream.bitrate_kbps));
  field(el, "codecs", [stream.video_codec, stream.audio_codec].filter(Boolean).join(" + ") || "–");
  field(el, "protocol", (stream.protocol || "rtmp").toUpperCase());
  // SRT's link: round trip, what was lost and resent, what was given up.
  const link = stream.link;
  el.querySelector(".link-row").hidden = !link;
  el.querySelector(".link").hidden = !link;
  if (link) {
    const lossPct = link.packets_received
      ? (100 * link.packets_lost) / (link.packets_received + link.packets_lost)
      : 0;
    let text = "RTT " + Math.round(link.rtt_ms) + " ms · loss " + lossPct.toFixed(1) + "%";
    if (link.packets_dropped > 0) text += " · " + link.packets_dropped + " dropped";
    field(el, "link", text);
    el.querySelector(".link").title =
      "latency " + link.latency_ms + " ms, " + link.packets_retransmitted + " retransmitted, " +
      link.receive_buffer_packets + " packets waiting" + (link.encrypted ? ", encrypted" : "");
    el.querySelector(".link").dataset.state = link.packets_dropped > 0 ? "bad" : "ok";
  }
  // Health: a badge, and each check that is not good with its reason and fix.
  const health = stream.health;
  const badge = el.querySelector(".health");
  badge.textContent = health ? health.verdict : "–";
  badge.dataset.verdict = health ? health.verdict : "";
  const problems = (health && health.problems) || [];
  el.querySelector(".problems").replaceChildren(
    ...problems.map((p) => {
      const li = document.createElement("li");
      li.dataset.verdict = p.verdict;
      li.textContent = p.reason;
      li.title = p.fix;
      return li;
    }),
  );
  // A new picture only when the node wrote one (the URL changes with it).
  if (stream.thumbnail_updated_at && stream.thumbnail_updated_at !== entry.thumbKey) {
    entry.thumbKey = stream.thumbnail_updated_at;
    el.querySelector("img").src =
      stream.thumbnail_url + "?t=" + encodeURIComponent(stream.thumbnail_updated_at);
  }
  const list = el.querySelector(".relays");
  const items = [];
  for (const r of stream.relays) {
    const li = document.createElement("li");
    li.dataset.state = r.connected ? "connected" : "disconnected";
    // The state first: a long URL is cut at the end of the line.
    let state = r.connected ? "relaying" : "reconnecting";
    if (r.reconnects > 0) state += " (" + r.reconnects + " reconnects)";
    li.textContent = state + " → " + r.url;
    li.title = r.url + (!r.connected && r.last_error ? ": " + r.last_error : "");
    items.push(li);
  }
  if (items.length === 0) {
    const li = document.createElement("li");
    li.className = "none";
    li.textContent = "no relay";
    items.push(li);
  }
  list.replaceChildren(...items);
  tickCard(entry);
}

// Shows the card's uptime and comes back just after it next turns a second, so the
// clock on the card steps on the second (a fixed one-second timer would show a value
// up to a second old, and step by two now and then).
function tickCard(entry) {
  clearTimeout(entry.tick);
  const started = Date.parse(entry.stream.started_at);
  const up = Date.now() + clockSkewMs - started;
  field(entry.el, "uptime", duration(up));
  const untilNext = up >= 0 ? 1000 - (up % 1000) : -up;
  entry.tick = setTimeout(() => tickCard(entry), untilNext + 5);
}

function render(streams) {
  const seen = new Set();
  let previous = null;
  for (const stream of streams) {
    seen.add(stream.channel_id);
    let entry = cards.get(stream.channel_id);
    if (!entry) {
      entry = makeCard(stream);
      cards.set(stream.channel_id, entry);
    }
    updateCard(entry, stream);
    // Keep the API's order (by name) without moving cards that are already in place.
    const want = previous ? previous.nextSibling : grid.firstChild;
    if (want !== entry.el) grid.insertBefore(entry.el, want);
    previous = entry.el;
  }
  for (const [id, entry] of cards) {
    if (!seen.has(id)) removeCard(id, entry);
  }
  document.getElementById("empty").hidden = cards.size > 0;
  document.getElementById("count").textContent =
    cards.size + (cards.size === 1 ? " channel live" : " channels live");
}

function removeCard(id, entry) {
  clearTimeout(entry.tick);
  entry.el.remove();
  cards.delete(id);
}

async function refresh() {
  try {
    const answer = await fetch("/api/v1/streams", { cache: "no-store" });
    if (!answer.ok) throw new Error("HTTP " + answer.status);
    const date = Date.parse(answer.headers.get("date") || "");
    // The Date header is in whole seconds, so each answer says the node's clock is
    // at least this far ahead: the largest such bound is kept, or uptimes would step
    // back by up to a second from one answer to the next.
    if (!Number.isNaN(date)) {
      const atLeast = date - Date.now();
      clockSkewMs = clockSkewKnown ? Math.max(clockSkewMs, atLeast) : atLeast;
      clockSkewKnown = true;
    }
    const body = await answer.json();
    render(body.streams);
    setStatus("ok", "updated " + new Date().toLocaleTimeString());
  } catch (e) {
    setStatus("error", "cannot reach the node (" + e.message + "), retrying");
  }
}

// Events arrive in bursts (a reconnect storm): one refresh for a burst.
function refreshSoon() {
  if (refreshTimer !== null) return;
  refreshTimer = setTimeout(() => {
    refreshTimer = null;
    refresh();
  }, 200);
}

function follow() {
  const events = new EventSource("/api/v1/events");
  events.addEventListener("live", refreshSoon);
  events.addEventListener("thumbnail", refreshSoon);
  events.addEventListener("health", refreshSoon);
  events.addEventListener("lagged", refreshSoon);
  events.addEventListener("offline", (e) => {
    try {
      const id = JSON.parse(e.data).channel_id;
      const entry = cards.get(id);
      if (entry) removeCard(id, entry);
    } catch (_) {
      // A body we do not understand: the refresh below sets things right.
    }
    refreshSoon();
  });
  // EventSource reconnects by itself; the poll covers the gap.
  events.addEventListener("open", refreshSoon);
}

refresh();
follow();
setInterval(refresh, POLL_MS);
