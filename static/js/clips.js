/**
 * The shoppable short-video feed, `/clips.html`: product clips from live shows, newest
 * first (`GET /api/clips`, paged with `next`), each with its product card and a Buy
 * button while the product's flash sale is open.
 *
 * - A clip is the stretch of a live show while its product was pinned: a VOD HLS
 *   playlist and a poster frame (see docs/media.md). Only the clip in view plays,
 *   muted and looping ({@link playHls}: hls.js where the browser has Media Source
 *   Extensions, else its own HLS); a clip that leaves the view stops and lets go of
 *   its player.
 * - Buy places an `order` over the room's WebSocket ({@link LiveClient},
 *   {@link placeOrder}, one idempotency key per press) and shows the outcome: held
 *   with the pay link and the payment window, sold out, limit reached, sale over.
 *   Buying needs a viewer's sign-in: the demo sign-in, shared with the viewer page
 *   (same `sessionStorage` keys), asked for on the first Buy (or with "Sign in").
 *
 * Query parameters: `limit` (clips per page, default 8).
 *
 * For tests and debugging, `window.__live` exposes `{client, feed}`; the page never
 * reads it.
 *
 * @module clips
 */

import { LiveClient, newOrderKey, placeOrder } from "/js/client.js";
import { clock, currencyOf, formatDuration, Money } from "/js/format.js";
import { Session } from "/js/session.js";
import { byId, note, showConnection } from "/js/ui.js";
import { playHls } from "/js/video.js";

// -- configuration ---------------------------------------------------------------

const params = new URLSearchParams(location.search);
const LIMIT = Math.min(50, Math.max(1, Number.parseInt(params.get("limit") ?? "", 10) || 8));
/** The viewer page's sign-in keys: signed in there (in this tab), signed in here. */
const session = new Session("livecommerce.watch.token");
const NAME_KEY = "livecommerce.watch.name";

// -- DOM -------------------------------------------------------------------------

const el = {
  me: byId("me"), signIn: /** @type {HTMLButtonElement} */ (byId("sign-in")), conn: byId("conn"),
  state: byId("feed-state"), list: byId("clips"),
  more: /** @type {HTMLButtonElement} */ (byId("more")),
  reload: /** @type {HTMLButtonElement} */ (byId("reload")),
};

// -- state -----------------------------------------------------------------------

/**
 * A clip as `GET /api/clips` lists it.
 * @typedef {{id: string, room: string, sku: string, title: string, price: number,
 *   currency: string, image: string | null, started_at: number, ended_at: number,
 *   duration_s: number, playlist: string, poster: string | null,
 *   sale: {id: string, price: number, remaining: number, ends_at: number} | null}} Clip
 */

/**
 * The feed: clips shown (by id), the cursor of the next page, room titles, and the
 * clip that plays.
 * @type {{clips: Map<string, Clip>, next: string | null, loading: boolean, done: boolean,
 *   rooms: Map<string, string>, user: {id: string, name: string, role: string} | null,
 *   playing: string | null, plays: number, buying: Set<string>}}
 */
const feed = {
  clips: new Map(), next: null, loading: false, done: false, rooms: new Map(), user: null,
  playing: null, plays: 0, buying: new Set(),
};

/** @type {Map<string, import("/js/video.js").HlsPlayback>} clip id -> its player */
const playbacks = new Map();
/** @type {Map<string, Money>} */
const moneys = new Map();

/** @param {string} currency @returns {Money} */
function moneyOf(currency) {
  const code = currencyOf(currency);
  let m = moneys.get(code);
  if (!m) moneys.set(code, (m = new Money(code)));
  return m;
}

const client = new LiveClient({
  onState: (state, detail) => showConnection(el.conn, state, detail),
  onEvent,
  refreshToken: () => session.refresh(),
});

window.__live = { client, feed };

// -- loading the feed ---------------------------------------------------------------

/** The next page of clips (the first when the feed is empty). */
async function loadMore() {
  if (feed.loading || feed.done) return;
  feed.loading = true;
  el.more.disabled = true;
  el.reload.hidden = true;
  const first = feed.clips.size === 0;
  if (first) el.state.textContent = "Loading clips…";
  const query = new URLSearchParams({ limit: String(LIMIT) });
  if (feed.next) query.set("cursor", feed.next);
  try {
    const page = await session.api(`/api/clips?${query}`);
    const fresh = (page.clips ?? []).filter((/** @type {Clip} */ c) => !feed.clips.has(c.id));
    await roomTitles(fresh);
    for (const clip of fresh) {
      feed.clips.set(clip.id, clip);
      el.list.append(clipNode(clip));
    }
    feed.next = page.next ?? null;
    feed.done = !feed.next;
    if (feed.clips.size === 0) {
      el.state.textContent = "No clips yet. A clip is made while a host pins a product in a live show.";
    } else {
      const n = feed.clips.size;
      el.state.textContent = feed.done
        ? `${n} clip${n === 1 ? "" : "s"}: that's all for now.`
        : `${n} clips so far.`;
    }
  } catch (err) {
    const why = err?.message ?? "the server cannot be reached";
    el.state.textContent = `The clips could not be loaded: ${why}.`;
    el.reload.hidden = false;
  } finally {
    feed.loading = false;
    el.more.disabled = false;
    el.more.hidden = feed.done;
    tick();
  }
}

/**
 * The titles of the clips' rooms (`GET /api/rooms`), for "From <show>"; the room id
 * stands in when the list does not have it.
 * @param {Clip[]} clips
 */
async function roomTitles(clips) {
  if (!clips.some((c) => !feed.rooms.has(c.room))) return;
  try {
    const { rooms } = await session.api("/api/rooms");
    for (const r of rooms ?? []) feed.rooms.set(r.id, r.title);
  } catch {
    // ids will do
  }
}

// -- one clip ------------------------------------------------------------------------

/**
 * A link the page may follow: http(s) or a path of this server; else null.
 * @param {unknown} url
 * @returns {string | null}
 */
function safeUrl(url) {
  if (typeof url !== "string" || !url) return null;
  try {
    const parsed = new URL(url, location.href);
    return parsed.protocol === "https:" || parsed.protocol === "http:" ? parsed.href : null;
  } catch {
    return null;
  }
}

/**
 * @param {Clip} clip
 * @returns {HTMLElement} `<li class="clip">`: the video, then the product card
 */
function clipNode(clip) {
  const money = moneyOf(clip.currency);
  const li = document.createElement("li");
  li.className = "clip";
  li.dataset.clipId = clip.id;
  const article = document.createElement("article");
  article.className = "clip-inner";
  const titleId = `clip-title-${clip.id}`;
  article.setAttribute("aria-labelledby", titleId);

  const frame = document.createElement("div");
  frame.className = "clip-video";
  const video = document.createElement("video");
  video.muted = true;
  video.loop = true;
  video.playsInline = true;
  video.preload = "none";
  video.setAttribute("muted", "");
  video.setAttribute("playsinline", "");
  video.setAttribute("aria-label", `Clip: ${clip.title}`);
  const poster = safeUrl(clip.poster);
  if (poster) video.poster = poster;
  const length = document.createElement("span");
  length.className = "clip-length";
  length.append(hiddenText("Length: "), formatDuration(clip.duration_s * 1000));
  frame.append(video, length);

  const card = document.createElement("div");
  card.className = "clip-card";
  const title = document.createElement("h2");
  title.id = titleId;
  title.className = "clip-title";
  title.textContent = clip.title;
  const price = document.createElement("p");
  price.className = "clip-price";
  const from = document.createElement("p");
  from.className = "clip-room";
  const show = feed.rooms.get(clip.room) ?? clip.room;
  from.append(`From “${show}” · `);
  const watch = document.createElement("a");
  watch.href = `/watch.html?room=${encodeURIComponent(clip.room)}`;
  watch.append("Watch the show live", hiddenText(` (${show})`));
  from.append(watch);

  const buyRow = document.createElement("div");
  buyRow.className = "clip-buy";
  const buy = document.createElement("button");
  buy.type = "button";
  buy.className = "btn btn-buy";
  buy.dataset.action = "buy";
  const saleLine = document.createElement("p");
  saleLine.className = "clip-sale";
  buyRow.append(buy, saleLine);
  const result = document.createElement("p");
  result.className = "buy-result";
  result.setAttribute("role", "status");
  const orders = document.createElement("ul");
  orders.className = "order-list";
  orders.setAttribute("aria-label", `Your orders of ${clip.title}`);
  orders.hidden = true;

  card.append(title, price, from, buyRow, result, orders);
  article.append(frame, card);
  li.append(article);
  buy.addEventListener("click", () => buyClip(clip.id));
  renderSale(clip, li, money);
  observer.observe(li);
  return li;
}

/**
 * The price (the sale's, with the list price struck through), the Buy button and the
 * sale's line, as the clip's `sale` says now.
 * @param {Clip} clip
 * @param {HTMLElement} [li]
 * @param {Money} [money]
 */
function renderSale(clip, li = nodeOf(clip.id), money = moneyOf(clip.currency)) {
  if (!li) return;
  const price = /** @type {HTMLElement} */ (li.querySelector(".clip-price"));
  const buy = /** @type {HTMLButtonElement} */ (li.querySelector("[data-action=buy]"));
  const line = /** @type {HTMLElement} */ (li.querySelector(".clip-sale"));
  const sale = clip.sale;
  const open = Boolean(sale) && clock.now() < (sale?.ends_at ?? 0) && (sale?.remaining ?? 0) > 0;
  price.replaceChildren();
  if (sale) {
    const now = document.createElement("strong");
    now.textContent = money.format(sale.price);
    price.append(hiddenText("Sale price: "), now);
    if (clip.price > sale.price) {
      const was = document.createElement("s");
      was.className = "muted";
      was.append(hiddenText("list price "), money.format(clip.price));
      price.append(" ", was);
    }
  } else {
    price.textContent = money.format(clip.price);
  }
  li.dataset.sale = open ? "open" : "none";
  buy.disabled = !open || feed.buying.has(clip.id);
  buy.textContent = feed.user || !open ? "Buy" : "Sign in and buy";
  buy.setAttribute("aria-label", `${buy.textContent}: ${clip.title}`);
  if (!sale) {
    line.textContent = "No flash sale on now.";
    delete line.dataset.endsAt;
  } else if (sale.remaining <= 0) {
    line.textContent = "Sold out.";
    delete line.dataset.endsAt;
  } else {
    line.dataset.endsAt = String(sale.ends_at);
    line.dataset.remaining = String(sale.remaining);
  }
}

/** @param {string} text @returns {HTMLElement} said by screen readers, not shown */
function hiddenText(text) {
  const span = document.createElement("span");
  span.className = "visually-hidden";
  span.textContent = text;
  return span;
}

/** @param {string} id @returns {HTMLElement | undefined} */
function nodeOf(id) {
  return /** @type {HTMLElement | undefined} */ (
    el.list.querySelector(`[data-clip-id="${CSS.escape(id)}"]`) ?? undefined);
}

// -- playing the clip in view ----------------------------------------------------------

/** How much of each clip is on screen (0 to 1), by id. @type {Map<string, number>} */
const visible = new Map();

/**
 * One clip plays at a time: the one most on screen, if at least 60% of it is; the
 * others stop (and let go of their players).
 */
const observer = new IntersectionObserver((entries) => {
  for (const entry of entries) {
    const id = /** @type {HTMLElement} */ (entry.target).dataset.clipId ?? "";
    visible.set(id, entry.isIntersecting ? entry.intersectionRatio : 0);
  }
  let best = null;
  let most = 0.6;
  for (const li of el.list.children) {
    const id = /** @type {HTMLElement} */ (li).dataset.clipId ?? "";
    const ratio = visible.get(id) ?? 0;
    if (ratio >= most + 0.01 || (best === null && ratio >= most)) {
      best = id;
      most = ratio;
    }
  }
  for (const id of [...playbacks.keys()]) if (id !== best) stop(id);
  if (feed.playing && feed.playing !== best) stop(feed.playing); // one still starting
  if (best && feed.playing !== best) play(best);
}, { threshold: [0, 0.25, 0.5, 0.6, 0.75, 0.9, 1] });

/** @param {string} id */
async function play(id) {
  const clip = feed.clips.get(id);
  const li = nodeOf(id);
  if (!clip || !li || playbacks.has(id)) return;
  if (feed.playing && feed.playing !== id) stop(feed.playing);
  feed.playing = id;
  const video = /** @type {HTMLVideoElement} */ (li.querySelector("video"));
  const url = safeUrl(clip.playlist);
  if (!url) return;
  try {
    const playback = await playHls(video, url, {
      onFatal: () => {
        stop(id);
        li.dataset.video = "error";
      },
    });
    if (feed.playing !== id) {
      playback.destroy();
      return;
    }
    playbacks.set(id, playback);
    li.dataset.video = "playing";
    feed.plays += 1;
    await video.play().catch(() => {});
  } catch {
    li.dataset.video = "error"; // the poster stays
  }
}

/** @param {string} id */
function stop(id) {
  const playback = playbacks.get(id);
  playbacks.delete(id);
  if (feed.playing === id) feed.playing = null;
  const li = nodeOf(id);
  if (li) {
    /** @type {HTMLVideoElement} */ (li.querySelector("video")).pause();
    li.dataset.video = "stopped";
  }
  playback?.destroy();
}

// -- buying ---------------------------------------------------------------------------

/** @returns {Promise<void>} signed in as a viewer (the demo sign-in) and connected */
async function ensureViewer() {
  if (feed.user && client.state === "live") return;
  if (!session.token) {
    let name = params.get("name") || sessionStorage.getItem(NAME_KEY);
    if (!name) name = `Viewer ${1000 + Math.floor(Math.random() * 9000)}`;
    await session.demo("viewer", name);
    sessionStorage.setItem(NAME_KEY, name);
  }
  const hello = await client.connect(session.token);
  if (hello.user.role === "guest") throw { code: "unauthorized", message: "Sign in to buy." };
  feed.user = hello.user;
  renderAccount();
}

/** The "Sign in" button. */
async function signIn() {
  el.signIn.disabled = true;
  try {
    await ensureViewer();
  } catch (err) {
    el.state.textContent = `Sign-in failed: ${err?.message ?? "try again"}.`;
  } finally {
    el.signIn.disabled = false;
  }
}

/**
 * One press of Buy: one unit of the clip's sale, with one idempotency key (reused by
 * {@link placeOrder} while the outcome is unknown).
 * @param {string} id
 */
async function buyClip(id) {
  const clip = feed.clips.get(id);
  const li = nodeOf(id);
  if (!clip?.sale || !li || feed.buying.has(id)) return;
  const result = /** @type {HTMLElement} */ (li.querySelector(".buy-result"));
  feed.buying.add(id);
  renderSale(clip);
  note(result, "Reserving…", "pending", 0);
  const sale = clip.sale;
  try {
    await ensureViewer();
    const intent = { room: clip.room, sale: sale.id, qty: 1, key: newOrderKey() };
    const { order } = await placeOrder(client, intent, {
      onRetry: () => note(result, "Connection lost; trying again…", "pending", 0),
    });
    sale.remaining = Math.max(0, sale.remaining - order.qty);
    addOrder(li, clip, order);
    note(result, order.status === "held"
      ? `Reserved ${order.qty}! Pay before the timer runs out.`
      : `Your order is ${order.status}.`, order.status === "held" ? "ok" : "info", 0);
  } catch (err) {
    if (err?.code === "sold_out") sale.remaining = 0;
    if (err?.code === "sale_not_active" || err?.code === "room_not_live") clip.sale = null;
    note(result, explainOrder(err), "error", 0);
  } finally {
    feed.buying.delete(id);
    renderSale(clip);
  }
}

/**
 * @param {{code?: string, message?: string}} err a refused order
 * @returns {string}
 */
function explainOrder(err) {
  switch (err?.code) {
    case "sold_out": return "Sold out for now. Units come back if reservations expire.";
    case "limit_exceeded": return "Limit reached: you have as many as one person may buy in this sale.";
    case "sale_not_active": return "This sale is over.";
    case "room_not_live": return "The show is not live any more: the sale is over.";
    case "rate_limited": return "Too many tries at once. Wait a second and press Buy again.";
    case "banned": return "You are banned from this show.";
    case "unauthorized": return "Sign in to buy.";
    case "disconnected":
    case "timeout": return "Not connected right now. Try again in a moment.";
    default: return err?.message || "Something went wrong.";
  }
}

/**
 * The order under the clip's card: what, status, payment window and the Pay link.
 * @param {HTMLElement} li
 * @param {Clip} clip
 * @param {any} order
 */
function addOrder(li, clip, order) {
  const list = /** @type {HTMLElement} */ (li.querySelector(".order-list"));
  list.hidden = false;
  list.querySelector(`[data-order-id="${CSS.escape(order.id)}"]`)?.remove();
  const item = document.createElement("li");
  item.className = "order";
  item.dataset.orderId = order.id;
  item.dataset.status = order.status;
  const what = document.createElement("span");
  what.className = "order-what";
  const total = moneyOf(clip.currency).format(order.price * order.qty);
  what.textContent = `${order.qty} × ${clip.title} · ${total}`;
  const status = document.createElement("span");
  status.className = "order-status";
  status.textContent = { held: "Reserved", paid: "Paid", expired: "Expired", cancelled: "Cancelled" }[
    /** @type {"held"} */ (order.status)] ?? order.status;
  item.append(what, status);
  if (order.status === "held") {
    const timer = document.createElement("span");
    timer.className = "order-timer";
    timer.setAttribute("role", "timer");
    timer.dataset.expiresAt = String(order.expires_at);
    item.append(timer);
    const pay = safeUrl(order.payment_url);
    if (pay) {
      const a = document.createElement("a");
      a.className = "btn btn-small pay";
      a.href = pay;
      a.target = "_blank";
      a.rel = "noopener";
      a.textContent = "Pay";
      a.setAttribute("aria-label", `Pay for ${clip.title}`);
      item.append(a);
    }
  }
  list.prepend(item);
  tick();
}

/** @param {any} ev private events of the buyer: an order paid, expired, cancelled */
function onEvent(ev) {
  if (typeof ev.ts === "number") clock.observe(ev.ts);
  if (ev.type !== "order.updated") return;
  for (const item of el.list.querySelectorAll(`.order[data-order-id="${CSS.escape(ev.order.id)}"]`)) {
    const li = /** @type {HTMLElement} */ (item.closest(".clip"));
    const clip = feed.clips.get(li?.dataset.clipId ?? "");
    if (clip) addOrder(li, clip, { ...ev.order });
  }
}

// -- rendering ------------------------------------------------------------------------

function renderAccount() {
  const u = feed.user;
  el.me.textContent = u ? `Signed in as ${u.name}` : "Watching as a guest";
  el.signIn.hidden = Boolean(u);
  for (const clip of feed.clips.values()) renderSale(clip);
}

/** Countdowns (each sale's end, each hold's payment window), four times a second. */
function tick() {
  const now = clock.now();
  for (const line of el.list.querySelectorAll(".clip-sale[data-ends-at]")) {
    const node = /** @type {HTMLElement} */ (line);
    const left = Number(node.dataset.endsAt) - now;
    const remaining = Number(node.dataset.remaining);
    node.textContent = left > 0
      ? `Flash sale: ${remaining} left · ends in ${formatDuration(left)}`
      : "The flash sale is over.";
    if (left <= 0) {
      delete node.dataset.endsAt;
      const id = /** @type {HTMLElement} */ (node.closest(".clip")).dataset.clipId ?? "";
      const clip = feed.clips.get(id);
      if (clip) renderSale(clip);
    }
  }
  for (const timer of el.list.querySelectorAll("[data-expires-at]")) {
    const left = Number(/** @type {HTMLElement} */ (timer).dataset.expiresAt) - now;
    timer.textContent = left > 0 ? `Pay within ${formatDuration(left)}` : "Payment window closing…";
  }
}

// -- input and start -----------------------------------------------------------------------

el.more.addEventListener("click", loadMore);
el.reload.addEventListener("click", loadMore);
el.signIn.addEventListener("click", signIn);

// The next page loads by itself when the end of the feed comes near.
new IntersectionObserver((entries) => {
  if (entries.some((e) => e.isIntersecting) && feed.clips.size) loadMore();
}, { rootMargin: "400px 0px" }).observe(el.more);

setInterval(tick, 250);

if (session.token) {
  ensureViewer().catch(() => {
    session.forget();
    feed.user = null;
    renderAccount();
  });
}
loadMore();
