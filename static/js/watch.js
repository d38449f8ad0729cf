/**
 * The viewer page, `/watch.html?room=<id>`: watch a live show, chat, like and buy.
 *
 * Plain ES module on top of {@link LiveClient} (`/js/client.js`). The page keeps one
 * `view` object with the room's state, applies every server event to it and
 * re-renders only the part the event touched:
 *
 * - the pinned product and the featured flash sale (countdown, stock bar, Buy);
 * - the viewer's own orders (hold countdown, "Pay" link, live status);
 * - the chat, rendered in batches once per animation frame and capped at
 *   `max_messages` elements, see {@link ChatList} (`/js/ui.js`);
 * - the live video ({@link LivePlayer}, `/js/video.js`): WebRTC (WHEP), HLS when the
 *   server has no WebRTC seat left or WebRTC fails, "The host is not live yet" and
 *   retries while there is no stream; muted autoplay with an "Unmute" button;
 * - likes (floating hearts, capped, see {@link HeartLayer}) and viewers;
 * - the connection state ("Reconnecting…"); {@link LiveClient} resumes the room.
 *
 * Query parameters: `room` (default `demo`), `max_messages` (chat messages kept on
 * the page, default 200), `name` (the display name used by the demo sign-in),
 * `currency` (ISO code used to format prices, default USD).
 *
 * Money, durations and the server's clock come from `/js/format.js`; the connection
 * banner, status lines and chat lines from `/js/ui.js`, as on the staff pages.
 *
 * For tests and debugging, `window.__live` exposes `{client, view, feed, hearts,
 * stats, player}`; the page never reads it.
 *
 * @module watch
 */

import { LikeBatcher, LiveClient, newOrderKey, placeOrder } from "/js/client.js";
import { clock, count, currencyOf, formatDuration, Money } from "/js/format.js";
import {
  applyCouponEvent, applyGiveawayEvent, byId, ChatList, confirmAction, download, messageNode,
  note, showConnection, verifyDraw,
} from "/js/ui.js";
import { LivePlayer } from "/js/video.js";

// -- configuration ---------------------------------------------------------------

const params = new URLSearchParams(location.search);
const ROOM = params.get("room") || "demo";
const MAX_MESSAGES = positiveInt(params.get("max_messages"), 200);
const money = new Money(currencyOf(params.get("currency")));
/** Hearts on screen at once; taps beyond that still count, they just don't float. */
const MAX_HEARTS = 24;
/** Most hearts one `likes` event from other viewers adds. */
const HEARTS_PER_EVENT = 2;
/** The largest quantity offered in the quantity menu. */
const MAX_QTY_CHOICE = 10;
const TOKEN_KEY = `livecommerce.watch.token`;
const NAME_KEY = `livecommerce.watch.name`;

/**
 * @param {string | null} text
 * @param {number} fallback
 * @returns {number} `text` as a positive integer, or `fallback`.
 */
function positiveInt(text, fallback) {
  const n = Number.parseInt(text ?? "", 10);
  return Number.isFinite(n) && n > 0 ? n : fallback;
}

// -- DOM -------------------------------------------------------------------------

const el = {
  title: byId("title"), showStatus: byId("show-status"), viewers: byId("viewers"),
  likes: byId("likes"), me: byId("me"), signIn: byId("sign-in"), conn: byId("conn"),
  playerLive: byId("player-live"), hearts: byId("hearts"), shop: byId("shop"),
  player: byId("player"), video: /** @type {HTMLVideoElement} */ (byId("video")),
  playerPlaceholder: byId("player-placeholder"), playerMessage: byId("player-message"),
  playerDetail: byId("player-detail"), unmute: /** @type {HTMLButtonElement} */ (byId("unmute")),
  videoState: byId("video-state"),
  noProduct: byId("no-product"), product: byId("product"), productMedia: byId("product-media"),
  productTitle: byId("product-title"), productPrice: byId("product-price"), sale: byId("sale"),
  saleTimerLabel: byId("sale-timer-label"), saleCountdown: byId("sale-countdown"),
  saleTitle: byId("sale-title"), salePrice: byId("sale-price"),
  saleListPrice: byId("sale-list-price"), stockBar: byId("stock-bar"),
  stockFill: byId("stock-fill"), stockText: byId("stock-text"),
  qty: /** @type {HTMLSelectElement} */ (byId("qty")),
  buy: /** @type {HTMLButtonElement} */ (byId("buy")), buyResult: byId("buy-result"),
  orders: byId("orders"), orderList: byId("order-list"), announcement: byId("announcement"),
  coupons: byId("coupons"), couponList: byId("coupon-list"), couponResult: byId("coupon-result"),
  auction: byId("auction"), auTitle: byId("au-title"), auPrice: byId("au-price"),
  auLeader: byId("au-leader"), auClock: byId("au-clock"), auForm: byId("au-form"),
  auAmount: /** @type {HTMLInputElement} */ (byId("au-amount")),
  auMax: /** @type {HTMLInputElement} */ (byId("au-max")),
  auBid: /** @type {HTMLButtonElement} */ (byId("au-bid")), auResult: byId("au-result"),
  groupbuy: byId("groupbuy"), dealList: byId("deal-list"), groupResult: byId("group-result"),
  giveaway: byId("giveaway"), gwPrize: byId("gw-prize"), gwCount: byId("gw-count"),
  gwHow: byId("gw-how"), gwEntries: byId("gw-entries"), gwClock: byId("gw-clock"),
  gwEnter: /** @type {HTMLButtonElement} */ (byId("gw-enter")), gwRule: byId("gw-rule"),
  gwResult: byId("gw-result"), gwCheckRow: byId("gw-check-row"), gwCheck: byId("gw-check"),
  gwProof: /** @type {HTMLAnchorElement} */ (byId("gw-proof")), gwVerdict: byId("gw-verdict"),
  feed: byId("feed"), jump: byId("jump"), composer: byId("composer"),
  composerGuest: byId("composer-guest"), signInChat: byId("sign-in-chat"),
  composerRow: byId("composer-row"), chatText: /** @type {HTMLInputElement} */ (byId("chat-text")),
  chatSend: /** @type {HTMLButtonElement} */ (byId("chat-send")), like: byId("like"),
  hint: byId("composer-hint"),
  myData: byId("my-data"),
  dataDialog: /** @type {HTMLDialogElement} */ (byId("data-dialog")),
  dataDownload: byId("data-download"), dataErase: byId("data-erase"),
  dataClose: byId("data-close"), dataNote: byId("data-note"),
  reportShow: byId("report-show"),
  reportDialog: /** @type {HTMLDialogElement} */ (byId("report-dialog")),
  reportForm: byId("report-form"), reportWhat: byId("report-what"),
  reportReason: /** @type {HTMLSelectElement} */ (byId("report-reason")),
  reportNote: /** @type {HTMLInputElement} */ (byId("report-note")),
  reportCancel: byId("report-cancel"),
};

// -- state -----------------------------------------------------------------------

/**
 * Everything the page shows about the room.
 * @type {{
 *   title: string, status: string, viewers: number, likes: number, ownTaps: number,
 *   pinned: {sku: string, title: string, price: number, image: string | null} | null,
 *   sales: Map<string, any>, ended: {sale: any, reason: string} | null,
 *   orders: Map<string, any>, user: {id: string, name: string, role: string} | null,
 *   token: string | null, buying: boolean, mutedUntil: number, banned: boolean,
 *   coupons: Map<string, any>, myCoupons: Record<string, number>,
 *   giveaway: any, entered: boolean, commitments: Map<string, string>,
 *   deals: Map<string, any>, groups: Map<string, any>, myGroups: Map<string, any>,
 *   auction: any, arms: Record<string, string>,
 * }}
 */
const view = {
  title: "", status: "", viewers: 0, likes: 0, ownTaps: 0, pinned: null,
  sales: new Map(), ended: null, orders: new Map(), user: null, token: null,
  buying: false, mutedUntil: 0, banned: false, coupons: new Map(), myCoupons: {},
  giveaway: null, entered: false, commitments: new Map(),
  deals: new Map(), groups: new Map(), myGroups: new Map(), auction: null, arms: {},
};

/** The group a share link invites to (`watch.html?room=demo&group=<id>`), if any. */
const INVITED = params.get("group");

/** Figures for tests and the curious: the chat's (see {@link ChatList}) and the joins'. */
const stats = {
  received: 0, rendered: 0, skipped: 0, deleted: 0, frames: 0, joins: 0, recovered: false,
};

// -- hearts ------------------------------------------------------------------------

/**
 * Floating hearts over the video. Each heart is one element animated by CSS
 * (transform and opacity only, so the compositor does the work) and removed when
 * its animation ends; no more than `max` are alive at once.
 */
class HeartLayer {
  /**
   * @param {HTMLElement} layer
   * @param {number} max
   */
  constructor(layer, max) {
    this.layer = layer;
    this.max = max;
    this.alive = 0;
    this.reduceMotion = matchMedia("(prefers-reduced-motion: reduce)").matches;
  }

  /** Float up to `n` hearts (fewer when the cap is reached). @param {number} n */
  burst(n) {
    if (this.reduceMotion || document.hidden) return;
    for (let i = 0; i < n && this.alive < this.max; i += 1) {
      const heart = document.createElement("span");
      heart.className = "heart";
      heart.textContent = "♥";
      heart.style.setProperty("--dx", `${Math.round((Math.random() - 0.5) * 80)}px`);
      heart.style.setProperty("--hue", `${330 + Math.round(Math.random() * 40)}`);
      heart.style.animationDuration = `${1800 + Math.round(Math.random() * 900)}ms`;
      heart.addEventListener("animationend", () => {
        heart.remove();
        this.alive -= 1;
      });
      this.alive += 1;
      this.layer.append(heart);
    }
  }
}

// -- the connection ----------------------------------------------------------------

const feed = new ChatList(el.feed, el.jump, {
  max: MAX_MESSAGES,
  render: (ev) => {
    const mine = Boolean(view.user && ev.user.id === view.user.id);
    const li = messageNode(ev, mine);
    if (!mine) {  // shown to signed-in viewers only (the page's data-signed-in)
      const report = document.createElement("button");
      report.type = "button";
      report.className = "msg-report";
      report.dataset.report = ev.msg_id;  // its word is CSS: not part of the message's text
      report.setAttribute("aria-label", `Report the message from ${ev.user.name}`);
      li.append(report);
    }
    return li;
  },
  stats,
});
const hearts = new HeartLayer(el.hearts, MAX_HEARTS);

const client = new LiveClient({
  onEvent,
  onJoin,
  onState,
  onError: (err) => {
    if (err.op === "join") notifyJoinError(err);
  },
  refreshToken: async () => (view.token ? await fetchDemoToken().catch(() => null) : null),
});

const likes = new LikeBatcher(client, ROOM, {
  onError: (err) => note(el.hint, explain(err)),
});

const player = new LivePlayer(el.video, {
  room: ROOM,
  token: () => view.token,
  retry: () => view.status !== "ended", // an ended show does not come back
  onState: renderVideo,
});

window.__live = { client, view, feed, hearts, stats, player };

/** The banner's wording when the connection is closed for good (see `showConnection`). */
const CLOSED_TEXT = new Map([["banned", "You are banned from this server."]]);

/**
 * @param {string} state
 * @param {{reason?: string, delay?: number}} detail
 */
function onState(state, detail) {
  if (state === "closed" && detail.reason === "unauthorized" && view.token) {
    // The stored sign-in no longer works: carry on as a guest.
    el.conn.dataset.state = state;
    forgetSignIn();
    start(null).catch(() => {});
    return;
  }
  showConnection(el.conn, state, detail, CLOSED_TEXT);
  renderControls();
}

/**
 * After every (re)join. The room's state (pinned product, sales, figures, orders)
 * always comes from the snapshot; the chat is rebuilt only when the server could
 * not replay what was missed (`recovered` false); otherwise the replayed events
 * follow through {@link onEvent}.
 * @param {string} room
 * @param {any} snapshot
 * @param {boolean} recovered
 */
function onJoin(room, snapshot, recovered) {
  if (room !== ROOM) return;
  stats.joins += 1;
  stats.recovered = recovered;
  view.title = snapshot.title;
  view.status = snapshot.status;
  view.viewers = snapshot.viewers;
  view.likes = snapshot.likes;
  view.pinned = snapshot.pinned;
  const sales = new Map();
  for (const sale of snapshot.sales) sales.set(sale.id, sale);
  view.sales = sales;
  for (const order of snapshot.orders ?? []) view.orders.set(order.id, order);
  view.coupons = new Map((snapshot.coupons ?? []).map((c) => [c.id, c]));
  view.myCoupons = { ...(snapshot.my_coupons ?? {}) };
  if (snapshot.giveaway || view.giveaway?.status === "open") {
    view.giveaway = snapshot.giveaway;
    view.entered = Boolean(snapshot.my_entry);
  }
  if (view.giveaway) view.commitments.set(view.giveaway.id, view.giveaway.commitment);
  if (snapshot.auction || view.auction?.status === "open") view.auction = snapshot.auction;
  view.arms = { ...(snapshot.arms ?? {}) };
  view.deals = new Map((snapshot.deals ?? []).map((d) => [d.id, d]));
  view.groups = new Map((snapshot.groups ?? []).map((g) => [g.id, g]));
  view.myGroups = new Map((snapshot.my_groups ?? []).map((g) => [g.id, g]));
  if (!recovered) feed.reset(snapshot.recent);
  showAnnouncement(snapshot.announcement);
  player.setMedia(snapshot.media ?? { live: false, whep: false, hls: false });
  if (player.state === "waiting") renderVideo("waiting", {}); // its words follow the show's status
  renderAll();
}

/** @param {any} ev */
function onEvent(ev) {
  if (ev.room !== ROOM) return;
  if (typeof ev.ts === "number") clock.observe(ev.ts);
  switch (ev.type) {
    case "chat":
      feed.push(ev);
      break;
    case "chat.deleted":
      feed.remove(ev.msg_id);
      break;
    case "announcement":
      showAnnouncement(ev);
      break;
    case "likes": {
      const delta = ev.total - view.likes;
      if (delta > 0) {
        // Our own taps already floated when tapped; float the others' ones.
        const mine = Math.min(view.ownTaps, delta);
        view.ownTaps -= mine;
        hearts.burst(Math.min(HEARTS_PER_EVENT, delta - mine));
      }
      // Taps the server refused never show up in the total: don't count them forever.
      view.ownTaps = Math.min(view.ownTaps, likes.pending + likes.maxCount);
      view.likes = ev.total;
      renderFigures();
      break;
    }
    case "presence":
      view.viewers = ev.viewers;
      renderFigures();
      break;
    case "product.pinned":
      view.pinned = ev.product;
      renderShop();
      break;
    case "product.unpinned":
      if (view.pinned?.sku === ev.product.sku) view.pinned = null;
      renderShop();
      break;
    case "sale.started": {
      const known = view.sales.get(ev.sale.id);
      view.sales.set(ev.sale.id, { remaining: known?.remaining ?? ev.sale.stock, ...ev.sale });
      if (view.ended?.sale.sku === ev.sale.sku) view.ended = null;
      renderShop();
      learnArm(ev.sale);
      break;
    }
    case "stock": {
      const sale = view.sales.get(ev.sale_id);
      if (sale) {
        sale.remaining = ev.remaining;
        renderStock();
      }
      break;
    }
    case "sale.ended": {
      const sale = view.sales.get(ev.sale_id);
      view.sales.delete(ev.sale_id);
      if (sale) view.ended = { sale, reason: ev.reason };
      renderShop();
      break;
    }
    case "order.updated":
      view.orders.set(ev.order.id, { ...view.orders.get(ev.order.id), ...ev.order });
      renderOrders();
      break;
    case "room.started":
      view.status = "live";
      if (player.state === "waiting") renderVideo("waiting", {}); // "The show is on: ..."
      renderAll();
      break;
    case "media.started":
    case "media.updated":
    case "media.ended":
      player.setMedia(ev.media);
      break;
    case "coupon.dropped":
    case "coupon.stock":
    case "coupon.ended":
      applyCouponEvent(view.coupons, ev);
      renderCoupons();
      break;
    case "auction.started":
    case "auction.ended":
      view.auction = ev.auction;
      el.auResult.textContent = ev.type === "auction.ended" ? hammerText(ev.auction) : "";
      renderAuction(true);
      break;
    case "auction.bid":
      if (view.auction?.id === ev.auction_id) {
        Object.assign(view.auction, {
          price: ev.price, min_bid: ev.min_bid, leader: ev.leader, bids: ev.bids,
          ends_at: ev.ends_at,
        });
        renderAuction(false);
      }
      break;
    case "auction.extended":  // the clock says it (the bid's own answer keeps its line)
      if (view.auction?.id === ev.auction_id) {
        Object.assign(view.auction, { ends_at: ev.ends_at, extensions: ev.extensions });
        tickAuction(clock.now());
      }
      break;
    case "deal.started":
      view.deals.set(ev.deal.id, ev.deal);
      renderGroups();
      break;
    case "deal.ended":
      view.deals.delete(ev.deal_id);
      renderGroups();
      break;
    case "group.forming":
      view.groups = new Map(ev.groups.map((/** @type {any} */ g) => [g.id, g]));
      for (const g of ev.groups) if (view.myGroups.has(g.id)) view.myGroups.set(g.id, g);
      renderGroups();
      break;
    case "group.filled":
    case "group.failed":
      view.groups.delete(ev.group.id);
      if (view.myGroups.delete(ev.group.id)) {
        el.groupResult.textContent = ev.type === "group.filled"
          ? "Your group is complete! Your order is reserved at the group price."
          : "Your group did not fill in time: nothing was charged.";
      }
      renderGroups();
      break;
    case "giveaway.started":
      view.entered = false;
      view.commitments.set(ev.giveaway.id, ev.giveaway.commitment); // kept to check the draw
      el.gwResult.textContent = "";
      el.gwVerdict.textContent = "";
    // falls through
    case "giveaway.entries":
    case "giveaway.drawn":
    case "giveaway.cancelled":
      view.giveaway = applyGiveawayEvent(view.giveaway, ev);
      renderGiveaway();
      break;
    case "room.ended":
      view.status = "ended";
      if (player.state === "waiting") renderVideo("waiting", {}); // "The show has ended."
      renderAll();
      break;
    case "moderation":
      if (ev.action === "muted") {
        view.mutedUntil = ev.until ?? 0;
        note(el.hint, `A moderator muted you until ${new Date(ev.until).toLocaleTimeString()}.`);
      } else if (ev.action === "banned") {
        view.banned = true;
        note(el.hint, "A moderator removed you from this room.");
      }
      renderControls();
      break;
    default:
      break; // the server may add event types; ignore what we don't know
  }
}

/** @param {{code: string, message: string}} err */
function notifyJoinError(err) {
  if (err.code === "not_found") view.title = "There is no such show";
  else if (err.code === "banned") view.banned = true;
  else return;
  renderAll();
}

// -- signing in --------------------------------------------------------------------

/** @returns {Promise<string>} a demo viewer token from `POST /api/demo/token` */
async function fetchDemoToken() {
  let name = params.get("name") || sessionStorage.getItem(NAME_KEY);
  if (!name) name = `Viewer ${1000 + Math.floor(Math.random() * 9000)}`;
  const res = await fetch("/api/demo/token", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ role: "viewer", name }),
  });
  const data = await res.json().catch(() => null);
  if (!res.ok) {
    throw res.status === 404
      ? { code: "not_found", message: "This server has no demo sign-in." }
      : (data?.error ?? { code: "internal", message: `Sign-in failed (${res.status}).` });
  }
  sessionStorage.setItem(NAME_KEY, name);
  sessionStorage.setItem(TOKEN_KEY, data.token);
  view.token = data.token;
  return data.token;
}

function forgetSignIn() {
  sessionStorage.removeItem(TOKEN_KEY);
  view.token = null;
}

/** The "Sign in" buttons: get a viewer token and reconnect with it. */
async function signIn() {
  el.signIn.disabled = true;
  el.signInChat.setAttribute("disabled", "");
  try {
    await start(await fetchDemoToken());
    note(el.hint, "");
  } catch (err) {
    note(el.hint, explain(err));
  } finally {
    el.signIn.disabled = false;
    el.signInChat.removeAttribute("disabled");
    renderControls();
  }
}

/**
 * (Re)connect with `token` (null: a guest) and join the room; on a reconnect the
 * client re-joins with `since`, so nothing is missed in between.
 * @param {string | null} token
 */
async function start(token) {
  view.token = token;
  const hello = await client.connect(token);
  const user = hello.user.role === "guest" ? null : hello.user;
  if (user?.id !== view.user?.id) view.orders.clear(); // another buyer's orders
  view.user = user;
  if (!client.roomState(ROOM)) {
    await client.join(ROOM).catch((err) => notifyJoinError(err));
  }
  renderControls();
}

// -- buying ------------------------------------------------------------------------

/**
 * The sale the card shows: the open sale of the pinned product, else the newest
 * open sale.
 * @returns {any | null}
 */
function featuredSale() {
  let newest = null;
  for (const sale of view.sales.values()) {
    if (view.pinned && sale.sku === view.pinned.sku) return sale;
    if (!newest || sale.starts_at > newest.starts_at) newest = sale;
  }
  return newest;
}

/**
 * One press of "Buy": one intent, one idempotency key. The key is reused while
 * the outcome is unknown (see `placeOrder` in client.js); a new press makes a new key.
 */
async function buy() {
  if (!view.user) {
    await signIn();
    return;
  }
  const sale = featuredSale();
  if (!sale || view.buying) return;
  /** @type {Record<string, any>} */
  const intent = { room: ROOM, sale: sale.id, qty: Number(el.qty.value) || 1, key: newOrderKey() };
  // a claimed coupon: the server spends the one that takes the most off (or none)
  if (Object.keys(view.myCoupons).length) intent.coupon = "best";
  view.buying = true;
  renderControls();
  buyResult("Reserving…", "pending");
  try {
    const { order } = await placeOrder(client, intent, {
      onRetry: () => buyResult("Connection lost; trying again…", "pending"),
    });
    view.orders.set(order.id, { title: sale.title, ...order });
    renderOrders();
    const saved = order.discount ? ` Your coupon took ${money.format(order.discount)} off.` : "";
    buyResult(
      order.status === "held"
        ? `Reserved ${order.qty}! Complete payment before the timer runs out.${saved}`
        : `Your order is ${order.status}.`,
      order.status === "held" ? "ok" : "info",
    );
  } catch (err) {
    buyResult(explainOrder(err, sale), "error");
  } finally {
    view.buying = false;
    renderControls();
  }
}

/**
 * @param {{code: string, message?: string, until?: number}} err
 * @param {any} sale
 * @returns {string}
 */
function explainOrder(err, sale) {
  switch (err?.code) {
    case "sold_out":
      return "Sold out for now. Units come back if reservations expire, so keep watching.";
    case "limit_exceeded":
      return `Limit reached: at most ${sale.limit_per_user} per person in this sale.`;
    case "sale_not_active":
      return "This sale is not active any more.";
    case "rate_limited":
      return "Too many tries at once. Wait a second and press Buy again.";
    default:
      return explain(err);
  }
}

/**
 * @param {{code?: string, message?: string, until?: number} | undefined} err
 * @returns {string}
 */
function explain(err) {
  const at = (ms) => new Date(ms).toLocaleTimeString();
  switch (err?.code) {
    case "muted": return `You are muted until ${at(err.until ?? 0)}.`;
    case "slow_mode": return `Slow mode is on: you can write again at ${at(err.until ?? 0)}.`;
    case "rate_limited": return "Slow down a little.";
    case "room_not_live": return "The show is not live.";
    case "banned": return "You are banned from this room.";
    case "unauthorized": return "Sign in to do that.";
    case "disconnected":
    case "timeout": return "Not connected right now. Try again in a moment.";
    default: return err?.message || "Something went wrong.";
  }
}

// -- rendering ---------------------------------------------------------------------

function renderAll() {
  renderHeader();
  renderFigures();
  renderShop();
  renderControls();
}

function renderHeader() {
  el.title.textContent = view.title || "Live show";
  document.title = view.title ? `${view.title} · live` : "Live show";
  const labels = { live: "LIVE", scheduled: "Soon", ended: "Ended" };
  el.showStatus.textContent = labels[view.status] ?? "…";
  el.showStatus.dataset.status = view.status;
  el.playerLive.textContent = labels[view.status] ?? "…";
  el.playerLive.dataset.status = view.status;
}

/**
 * The video's state: the picture while it plays, else the placeholder saying why;
 * the screen reader hears the changes that matter (not every retry).
 * @param {import("/js/video.js").PlayerState} state
 * @param {any} detail
 */
function renderVideo(state, detail) {
  const before = el.player.dataset.state;
  el.player.dataset.state = state;
  const playing = state === "playing";
  el.playerPlaceholder.hidden = playing;
  el.unmute.hidden = !playing;
  el.player.dataset.via = playing ? detail.via : "";
  if (playing) {
    const via = detail.via === "hls" ? " (HLS)" : "";
    announceVideo(`The live video is playing${via}, muted.`);
    return;
  }
  if (state === "connecting") {
    // Retries while waiting keep the waiting message (no flicker, nothing announced).
    if (before === "waiting" || before === "error") return;
    el.playerMessage.textContent = "Connecting to the live video…";
    el.playerDetail.textContent = "";
  } else if (state === "waiting") {
    const ended = view.status === "ended";
    const left = before === "playing";
    el.playerMessage.textContent = ended ? "The show has ended." : "The host is not live yet";
    el.playerDetail.textContent = ended ? ""
      : left ? "The video stopped. It comes back as soon as the host is live again."
        : view.status === "live"
          ? "The show is on: the video starts by itself as soon as the host's camera is live."
          : "The video starts by itself as soon as the host goes live.";
    announceVideo(left ? "The live video stopped." : el.playerMessage.textContent);
  } else if (state === "error") {
    el.playerMessage.textContent = "The video cannot play";
    el.playerDetail.textContent = detail.message ?? "";
    announceVideo(`The video cannot play: ${detail.message ?? ""}`);
  }
}

/** @param {string} text said once by the video's live region */
function announceVideo(text) {
  if (el.videoState.textContent !== text) el.videoState.textContent = text;
}

function renderFigures() {
  el.viewers.textContent = compact(view.viewers);
  el.likes.textContent = compact(view.likes + view.ownTaps);
}

const compactFormat = new Intl.NumberFormat(undefined, { notation: "compact" });
/** @param {number} n */
function compact(n) {
  return n < 10_000 ? String(n) : compactFormat.format(n);
}

function renderShop() {
  const p = view.pinned;
  el.product.hidden = !p;
  el.shop.dataset.pinned = String(Boolean(p));
  el.noProduct.hidden = Boolean(p) || Boolean(featuredSale());
  if (p) {
    el.productTitle.textContent = p.title;
    el.productPrice.textContent = money.format(p.price);
    renderImage(p);
  }
  renderSale();
  renderCoupons();
  renderAuction(true);
  renderGroups();
  renderGiveaway();
  renderOrders();
}

/**
 * The lot: price, leader, clock, and the bid form (its amount follows the least bid
 * unless the viewer is typing one).
 * @param {boolean} fresh a new lot or a new page: the amount is set to the least bid
 */
function renderAuction(fresh) {
  const a = view.auction;
  el.auction.hidden = !a;
  if (!a) return;
  el.auction.dataset.status = a.status;
  el.auTitle.textContent = a.title;
  const open = a.status === "open";
  el.auPrice.textContent = a.leader ? `${money.format(a.price)}`
    : `Starting bid ${money.format(a.start_bid)}`;
  const mine = view.user && a.leader?.id === view.user.id;
  el.auLeader.textContent = !a.leader ? "No bids yet"
    : mine ? (open ? "You're the highest bidder" : "You won!") : `${a.leader.name} leads`;
  el.auction.dataset.leading = String(Boolean(mine));
  el.auForm.hidden = !open;
  el.auBid.disabled = !view.user || view.status !== "live";
  el.auBid.textContent = view.user ? "Bid" : "Sign in to bid";
  if (fresh || document.activeElement !== el.auAmount) {
    el.auAmount.value = money.toInput(a.min_bid);
  }
  tickAuction(clock.now());
}

/** @param {any} a an ended lot @returns {string} */
function hammerText(a) {
  if (!a.leader) return "The auction ended with no bids.";
  return view.user && a.leader.id === view.user.id
    ? `You won at ${money.format(a.price)}! Your order is reserved.`
    : `Sold to ${a.leader.name} for ${money.format(a.price)}.`;
}

/** @param {number} now */
function tickAuction(now) {
  const a = view.auction;
  if (!a) return;
  const left = a.ends_at - now;
  const late = a.extensions ? " (a late bid added time)" : "";
  el.auClock.textContent = a.status !== "open" ? "Ended"
    : left > 0 ? `${formatDuration(left)}${late}` : "Closing…";
  el.auClock.dataset.urgent = String(a.status === "open" && left < 10_000);
}

async function placeBid() {
  const a = view.auction;
  if (!a) return;
  const amount = money.parse(el.auAmount.value);
  const max = el.auMax.value.trim() ? money.parse(el.auMax.value) : null;
  if (amount === null || (el.auMax.value.trim() && max === null)) {
    el.auResult.textContent = `Enter an amount in ${money.currency}, like ${money.toInput(a.min_bid)}.`;
    return;
  }
  /** @type {Record<string, any>} */
  const fields = { room: ROOM, auction: a.id, amount };
  if (max !== null) fields.max = max;
  el.auBid.disabled = true;
  try {
    const { auction, leading } = await client.send("bid", fields);
    Object.assign(a, auction);
    el.auResult.textContent = leading ? "You're the highest bidder."
      : "Outbid at once: someone's maximum is higher. Bid again?";
    el.auMax.value = "";
  } catch (err) {
    el.auResult.textContent = err?.code === "bid_too_low"
      ? `Too low: bid at least ${money.format(err.min_bid)}.`
      : err?.code === "auction_closed" ? "The auction has ended." : explain(err);
    if (err?.code === "bid_too_low") a.min_bid = err.min_bid;
  }
  renderAuction(true);
}

/** The group-buy deals: your group (with its share link), groups to join, Start one. */
function renderGroups() {
  el.groupbuy.hidden = view.deals.size === 0 && view.myGroups.size === 0 && !INVITED;
  el.dealList.replaceChildren(...[...view.deals.values()].map(dealItem));
  if (INVITED && !view.myGroups.has(INVITED) && !view.groups.has(INVITED)) {
    const li = document.createElement("li");
    li.className = "deal invited";
    li.append("You were invited to a group. ", joinButton(INVITED, "Join this group"));
    el.dealList.append(li);
  }
  tickGroups(clock.now());
}

/** @param {any} deal @returns {HTMLLIElement} */
function dealItem(deal) {
  const li = document.createElement("li");
  li.className = "deal";
  li.dataset.deal = deal.id;
  const what = document.createElement("p");
  what.className = "deal-what";
  what.textContent = `${deal.title}: ${money.format(deal.price)} in a group of ${deal.size}`;
  li.append(what);
  const mine = [...view.myGroups.values()].find((g) => g.deal === deal.id);
  if (mine) {
    li.append(groupLine(mine, "Your group"));
    const share = document.createElement("p");
    share.className = "share";
    const link = new URL(location.href);
    link.searchParams.set("group", mine.id);
    const a = document.createElement("a");
    a.href = link.toString();
    a.textContent = "Share link";
    a.className = "share-link";
    share.append("Invite friends: ", a);
    li.append(share);
  } else {
    const open = document.createElement("button");
    open.type = "button";
    open.className = "btn btn-small btn-buy start-group";
    open.textContent = "Start a group";
    open.disabled = !view.user || view.status !== "live" || deal.remaining <= 0;
    if (!view.user) open.title = "Sign in to buy together";
    open.addEventListener("click", () => openGroup(deal.id));
    li.append(open);
    const others = [...view.groups.values()].filter((g) => g.deal === deal.id)
      .sort((a, b) => Number(b.id === INVITED) - Number(a.id === INVITED)).slice(0, 3);
    for (const g of others) li.append(groupLine(g, null));
  }
  return li;
}

/**
 * @param {any} g a forming group
 * @param {string | null} label "Your group", or null for one to join
 * @returns {HTMLElement}
 */
function groupLine(g, label) {
  const p = document.createElement("p");
  p.className = "group";
  p.dataset.group = g.id;
  const need = document.createElement("span");
  need.className = "group-need";
  need.textContent = `${label ?? `${g.members[0]}'s group`}: ${g.needed} more needed`;
  const left = document.createElement("span");
  left.className = "group-left";
  left.dataset.endsAt = String(g.ends_at);
  p.append(need, ", ", left);
  if (!label) p.append(" ", joinButton(g.id, g.id === INVITED ? "Join this group" : "Join"));
  return p;
}

/** @param {string} id @param {string} text @returns {HTMLButtonElement} */
function joinButton(id, text) {
  const join = document.createElement("button");
  join.type = "button";
  join.className = "btn btn-small join-group";
  join.textContent = text;
  join.disabled = !view.user || view.status !== "live";
  if (!view.user) join.title = "Sign in to join";
  join.addEventListener("click", () => joinGroup(id));
  return join;
}

/** @param {number} now */
function tickGroups(now) {
  for (const left of el.dealList.querySelectorAll("[data-ends-at]")) {
    const ms = Number(/** @type {HTMLElement} */ (left).dataset.endsAt) - now;
    left.textContent = ms > 0 ? `${formatDuration(ms)} left` : "closing…";
  }
}

/** @param {string} dealId */
async function openGroup(dealId) {
  try {
    const { group } = await client.send("group.open", { room: ROOM, deal: dealId });
    view.myGroups.set(group.id, group);
    el.groupResult.textContent = "Your group is open: share its link to fill it.";
  } catch (err) {
    el.groupResult.textContent = explainGroup(err);
  }
  renderGroups();
}

/** @param {string} id */
async function joinGroup(id) {
  try {
    const { group, filled } = await client.send("group.join", { room: ROOM, group: id });
    if (!filled) view.myGroups.set(group.id, group);
    el.groupResult.textContent = filled
      ? "Your group is complete! Your order is reserved at the group price."
      : `You joined: ${group.needed} more needed.`;
  } catch (err) {
    el.groupResult.textContent = explainGroup(err);
  }
  renderGroups();
}

/** @param {any} err @returns {string} */
function explainGroup(err) {
  switch (err?.code) {
    case "group_full": return "That group is full.";
    case "group_closed": return "That group has closed.";
    case "conflict": return "You are in a group of this deal already.";
    case "sold_out": return "No units are left for groups.";
    default: return explain(err);
  }
}

/** The giveaway: its prize, how to enter, entries and time left, then its winners. */
function renderGiveaway() {
  const g = view.giveaway;
  el.giveaway.hidden = !g;
  if (!g) return;
  el.giveaway.dataset.status = g.status;
  el.gwPrize.textContent = g.prize;
  el.gwCount.textContent = g.count > 1 ? `× ${g.count} winners` : "";
  const open = g.status === "open";
  const who = [g.verified_only ? "verified viewers" : "",
    g.watch_s ? `viewers who watched ${g.watch_s / 60} min` : ""].filter(Boolean).join(", ");
  el.gwHow.textContent = !open ? ""
    : view.entered ? "You're in! Stay to the draw to win."
    : g.entry === "keyword" ? `Comment “${g.keyword}” to enter${who ? ` (${who})` : ""}.`
    : `Press Enter to take part${who ? ` (${who})` : ""}.`;
  el.gwEntries.textContent = `${count(g.entries)} ${g.entries === 1 ? "entry" : "entries"}`;
  el.gwEnter.hidden = !open || g.entry !== "button";
  el.gwEnter.disabled = view.entered || !view.user || view.status !== "live";
  el.gwEnter.textContent = view.entered ? "Entered" : "Enter";
  el.gwEnter.title = view.user ? "" : "Sign in to enter";
  el.gwRule.textContent = open ? g.rule : "";
  el.gwCheckRow.hidden = g.status !== "drawn";
  if (g.status === "drawn") {
    el.gwProof.href = g.proof;
    const won = view.user && g.winners.includes(view.user.id);
    el.gwResult.textContent = won ? "You won! Your prize is in your orders."
      : g.winners.length ? `Drawn: ${g.winners.length} winner${g.winners.length > 1 ? "s" : ""}.`
      : "Drawn: nobody was still watching.";
  } else if (g.status === "cancelled") {
    el.gwResult.textContent = "The host cancelled this giveaway.";
  }
  tickGiveaway(clock.now());
}

/** @param {number} now */
function tickGiveaway(now) {
  const g = view.giveaway;
  if (!g) return;
  const left = g.ends_at - now;
  el.gwClock.textContent = g.status === "open" ? (left > 0 ? `· ${formatDuration(left)} left`
    : "· drawing…") : g.status === "drawn" ? "· drawn" : "";
}

async function enterGiveaway() {
  const g = view.giveaway;
  if (!g) return;
  el.gwEnter.disabled = true;
  try {
    await client.send("giveaway.enter", { room: ROOM, giveaway: g.id });
    view.entered = true;
    el.gwResult.textContent = "You're in. Good luck!";
  } catch (err) {
    el.gwResult.textContent = err?.code === "not_eligible" ? "This giveaway is for other viewers."
      : err?.code === "giveaway_closed" ? "Entries are closed." : explain(err);
  }
  renderGiveaway();
}

/** Check the draw here, in the browser: the same steps as `livecommerce verify-draw`. */
async function checkDraw() {
  const g = view.giveaway;
  if (!g || g.status !== "drawn") return;
  note(el.gwVerdict, "Checking…", "pending", 0);
  try {
    const resp = await fetch(g.proof);
    if (!resp.ok) throw new Error(`the proof could not be loaded (${resp.status})`);
    const proof = await resp.json();
    const problems = await verifyDraw(proof, view.commitments.get(g.id) ?? g.commitment);
    el.gwVerdict.dataset.valid = String(!problems.length);
    note(el.gwVerdict, problems.length ? `This draw does not check out: ${problems.join("; ")}.`
      : `The draw checks out: ${proof.winners.length} of ${proof.entrants.length} entrants won, `
        + "as the seed announced at the start decides.", problems.length ? "error" : "ok", 0);
  } catch (err) {
    note(el.gwVerdict, `Could not check the draw: ${err instanceof Error ? err.message : err}`,
      "error", 0);
  }
}

/** The live coupons, each with its Claim button (or why it cannot be claimed). */
function renderCoupons() {
  el.coupons.hidden = view.coupons.size === 0;
  el.couponList.replaceChildren(...[...view.coupons.values()].map(couponItem));
}

/** @param {any} coupon @returns {HTMLLIElement} */
function couponItem(coupon) {
  const li = document.createElement("li");
  li.className = "coupon";
  li.dataset.coupon = coupon.id;
  const mine = view.myCoupons[coupon.id] ?? 0;
  li.dataset.mine = String(mine > 0);
  const what = document.createElement("span");
  what.className = "coupon-what";
  const off = coupon.kind === "percent" ? `${coupon.value}% off` : `${money.format(coupon.value)} off`;
  const least = coupon.min_total ? ` orders of ${money.format(coupon.min_total)} or more` : "";
  const only = coupon.skus.length ? ` (${coupon.skus.map(titleOf).join(", ")})` : "";
  what.textContent = `${off}${least}${only}`;
  const left = document.createElement("span");
  left.className = "coupon-left";
  left.textContent = coupon.remaining > 0 ? `${coupon.remaining} left` : "All claimed";
  const claim = document.createElement("button");
  claim.type = "button";
  claim.className = "btn btn-small claim";
  const full = mine >= coupon.per_user;
  claim.textContent = full ? "Claimed" : mine ? "Claim another" : "Claim";
  claim.disabled = full || coupon.remaining <= 0 || !view.user || view.status !== "live";
  if (!view.user) claim.title = "Sign in to claim coupons";
  claim.addEventListener("click", () => claimCoupon(coupon.id));
  li.append(what, left, claim);
  return li;
}

/** @param {string} id */
async function claimCoupon(id) {
  try {
    const data = await client.send("coupon.claim", { room: ROOM, coupon: id });
    view.myCoupons[id] = data.mine;
    view.coupons.set(id, data.coupon);
    el.couponResult.textContent = "Coupon claimed! It is yours for this show.";
  } catch (err) {
    el.couponResult.textContent = explainCoupon(err);
  }
  renderCoupons();
}

/** @param {any} err @returns {string} */
function explainCoupon(err) {
  switch (err?.code) {
    case "sold_out": return "Every one of this coupon is claimed.";
    case "coupon_ended": return "This coupon has ended.";
    case "limit_exceeded": return "You have claimed this coupon already.";
    case "not_eligible": return `Keep watching: ${err.message}.`;
    default: return explain(err);
  }
}

/** The product's picture, or a tile with its initial when it has none. @param {any} p */
function renderImage(p) {
  const current = el.productMedia.firstElementChild;
  if (p.image && /^(https?:|data:image\/)/i.test(p.image)) {
    if (current instanceof HTMLImageElement && current.getAttribute("src") === p.image) return;
    const img = document.createElement("img");
    img.src = p.image;
    img.alt = p.title;
    img.decoding = "async";
    el.productMedia.replaceChildren(img);
  } else {
    const tile = document.createElement("span");
    tile.className = "product-initial";
    tile.setAttribute("aria-hidden", "true");
    tile.textContent = (p.title.trim()[0] ?? "?").toUpperCase();
    el.productMedia.replaceChildren(tile);
  }
}

/**
 * What this viewer pays in a sale: in an A/B test of its price, their arm's (the same
 * rule as the server's: arm b when SHA-1 of "<sale id>:<user id>" starts with an odd
 * hex digit).
 * @param {any} sale
 * @returns {number}
 */
function priceOf(sale) {
  return sale.price_b !== undefined && view.arms[sale.id] === "b" ? sale.price_b : sale.price;
}

/** @param {any} sale a sale with an A/B test: find this viewer's arm (then render) */
async function learnArm(sale) {
  if (!view.user || sale.price_b === undefined || view.arms[sale.id]) return;
  const text = new TextEncoder().encode(`${sale.id}:${view.user.id}`);
  const first = new Uint8Array(await crypto.subtle.digest("SHA-1", text))[0];
  view.arms[sale.id] = (first >> 4) % 2 ? "b" : "a";
  renderSale();
}

function renderSale() {
  const sale = featuredSale();
  const ended = !sale && view.ended ? view.ended : null;
  const shown = sale ?? ended?.sale ?? null;
  el.sale.hidden = !shown;
  el.shop.dataset.sale = String(Boolean(shown));
  el.sale.dataset.state = sale ? "open" : "ended";
  if (!shown) return;
  el.saleTitle.textContent = shown.title;
  el.saleTitle.hidden = view.pinned?.sku === shown.sku; // the product card says it already
  const price = priceOf(shown);
  el.salePrice.textContent = money.format(price);
  const list = view.pinned?.sku === shown.sku ? view.pinned.price : null;
  el.saleListPrice.textContent = list && list > price ? money.format(list) : "";
  const options = Math.max(1, Math.min(shown.limit_per_user, MAX_QTY_CHOICE));
  if (el.qty.options.length !== options) {
    el.qty.replaceChildren(
      ...Array.from({ length: options }, (_, i) => new Option(String(i + 1), String(i + 1))),
    );
  }
  if (ended) {
    const why = { sold_out: "Sold out", stopped: "Sale over", expired: "Sale over" };
    el.saleTimerLabel.textContent = "";
    el.saleCountdown.textContent = why[ended.reason] ?? "Sale over";
  }
  renderStock();
  tick();
  renderControls();
}

function renderStock() {
  const open = featuredSale();
  const ended = open ? null : view.ended;
  const sale = open ?? ended?.sale;
  if (!sale) return;
  const soldOut = ended?.reason === "sold_out";
  const remaining = soldOut ? 0 : Math.max(0, sale.remaining ?? sale.stock);
  const ratio = sale.stock ? remaining / sale.stock : 0;
  el.stockFill.style.transform = `scaleX(${ratio})`;
  el.stockBar.dataset.level = ratio <= 0.2 ? "low" : "ok";
  el.stockBar.setAttribute("aria-valuemax", String(sale.stock));
  el.stockBar.setAttribute("aria-valuenow", String(remaining));
  if (ended) {
    el.stockText.textContent = soldOut ? `All ${sale.stock} sold` : "Sale ended";
  } else {
    el.stockText.textContent =
      remaining > 0 ? `${remaining} of ${sale.stock} left` : `All ${sale.stock} reserved`;
  }
}

function renderOrders() {
  const orders = [...view.orders.values()].reverse();
  el.orders.hidden = orders.length === 0;
  el.orderList.replaceChildren(...orders.map(orderNode));
  tick();
}

/** @param {any} order @returns {HTMLElement} */
function orderNode(order) {
  const li = document.createElement("li");
  li.className = "order";
  li.dataset.orderId = order.id;
  li.dataset.status = order.status;
  const title = order.title ?? titleOf(order.sku);
  const what = document.createElement("span");
  what.className = "order-what";
  const total = order.price * order.qty - (order.discount ?? 0);
  const off = order.discount ? ` (coupon −${money.format(order.discount)})` : "";
  what.textContent = order.source === "giveaway" ? `Prize: ${title} · free`
    : order.source === "group" ? `Group buy: ${title} · ${money.format(total)}`
    : order.source === "auction" ? `Won at auction: ${title} · ${money.format(total)}`
    : `${order.qty} × ${title} · ${money.format(total)}${off}`;
  const status = document.createElement("span");
  status.className = "order-status";
  const labels = { held: "Reserved", paid: "Paid", expired: "Expired", cancelled: "Cancelled" };
  status.textContent = labels[order.status] ?? order.status;
  li.append(what, status);
  if (order.status === "held") {
    const timer = document.createElement("span");
    timer.className = "order-timer";
    timer.setAttribute("role", "timer");
    timer.dataset.expiresAt = String(order.expires_at);
    li.append(timer);
    const payUrl = safeUrl(order.payment_url);
    if (payUrl) {
      const pay = document.createElement("a");
      pay.className = "btn btn-small pay";
      pay.href = payUrl;
      pay.target = "_blank";
      // The sandbox's own checkout (same origin) gets this tab's sign-in (a copy of its
      // sessionStorage comes with an opener): its buttons send the buyer's token. A
      // shop elsewhere gets no handle on this page.
      pay.rel = new URL(payUrl).origin === location.origin ? "opener" : "noopener";
      pay.textContent = "Pay";
      li.append(pay);
    }
  }
  return li;
}

/**
 * A link the page may follow: http(s), absolute or relative to this page (the demo's
 * sandbox shop answers with a path); anything else (`javascript:`, ...) is dropped.
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

/** @param {string} sku @returns {string} */
function titleOf(sku) {
  for (const sale of view.sales.values()) if (sale.sku === sku) return sale.title;
  if (view.pinned?.sku === sku) return view.pinned.title;
  return sku;
}

/** Enable what the viewer may do now, and say why not otherwise. */
function renderControls() {
  renderCoupons(); // their Claim buttons follow the sign-in and the show's status
  renderGroups();
  const live = client.state === "live";
  const onAir = view.status === "live";
  const signedIn = Boolean(view.user);
  const me = view.user;
  el.me.textContent = me ? `Signed in as ${me.name}` : "Watching as a guest";
  document.body.dataset.signedIn = String(signedIn);
  el.reportShow.hidden = !signedIn;
  el.myData.hidden = !signedIn;
  el.signIn.hidden = signedIn;
  el.composerGuest.hidden = signedIn;
  el.composerRow.hidden = !signedIn;
  const canChat = signedIn && live && onAir && !view.banned;
  el.chatText.disabled = !signedIn || view.banned;
  el.chatSend.disabled = !canChat;
  const sale = featuredSale();
  const open = Boolean(sale) && clock.now() < sale.ends_at;
  el.buy.disabled = !live || !onAir || !open || view.buying;
  el.qty.disabled = !signedIn || !open;
  el.buy.textContent = signedIn ? "Buy now" : "Sign in to buy";
  if (!onAir && view.status) {
    el.chatText.placeholder = view.status === "ended" ? "The show has ended" : "The show starts soon";
  } else {
    el.chatText.placeholder = "Say something…";
  }
}

/**
 * The outcome of "Buy", under the button; it stays until the next one. (Short
 * messages under the composer, `note(el.hint, ...)`, clear themselves.)
 * @param {string} text
 * @param {"ok" | "error" | "pending" | "info"} kind
 */
function buyResult(text, kind) {
  note(el.buyResult, text, kind, 0);
}

/** @param {{text: string} | null} ev the latest announcement */
function showAnnouncement(ev) {
  el.announcement.hidden = !ev;
  el.announcement.textContent = ev ? ev.text : "";
}

/** Countdowns (the sale's end, each hold's payment window), four times a second. */
function tick() {
  const now = clock.now();
  const sale = featuredSale();
  if (sale) {
    const left = sale.ends_at - now;
    el.saleTimerLabel.textContent = left > 0 ? "Ends in" : "";
    el.saleCountdown.textContent = left > 0 ? formatDuration(left) : "Ending…";
    el.sale.dataset.urgent = String(left > 0 && left < 60_000);
    if (left <= 0 && !el.buy.disabled) renderControls();
  }
  tickGiveaway(now);
  tickGroups(now);
  tickAuction(now);
  for (const timer of el.orderList.querySelectorAll("[data-expires-at]")) {
    const left = Number(/** @type {HTMLElement} */ (timer).dataset.expiresAt) - now;
    timer.textContent = left > 0 ? `Pay within ${formatDuration(left)}` : "Payment window closing…";
  }
}

// -- input ---------------------------------------------------------------------------

el.signIn.addEventListener("click", signIn);
el.unmute.addEventListener("click", () => {
  el.video.muted = !el.video.muted;
  el.unmute.textContent = el.video.muted ? "Unmute" : "Mute";
  el.video.play().catch(() => {});
});
el.signInChat.addEventListener("click", signIn);
el.buy.addEventListener("click", buy);
el.gwEnter.addEventListener("click", enterGiveaway);
/** When this page last told the server a product's card was opened, by sku. */
const opened = new Map();
el.product.addEventListener("click", () => {  // a product click, for the show's figures
  const sku = view.pinned?.sku;
  if (!sku || client.state !== "live" || Date.now() - (opened.get(sku) ?? 0) < 10_000) return;
  opened.set(sku, Date.now());
  client.send("product.open", { room: ROOM, sku }).catch(() => {});
});
/** The message being reported (null: the show). */
let reporting = /** @type {string | null} */ (null);
/** @param {string | null} msgId @param {string} what */
function openReport(msgId, what) {
  reporting = msgId;
  el.reportWhat.textContent = what;
  el.reportNote.value = "";
  el.reportDialog.showModal();
}
el.feed.addEventListener("click", (e) => {
  const button = /** @type {HTMLElement} */ (e.target).closest("button[data-report]");
  if (!(button instanceof HTMLElement)) return;
  const text = button.closest(".msg")?.querySelector(".msg-text")?.textContent ?? "";
  openReport(button.dataset.report ?? "", `“${text}”`);
});
el.reportShow.addEventListener("click", () => openReport(null, "The show itself"));
el.myData.addEventListener("click", () => {
  el.dataNote.textContent = "";
  el.dataDialog.showModal();
});
el.dataClose.addEventListener("click", () => el.dataDialog.close());
el.dataDownload.addEventListener("click", async () => {
  const status = await download("/api/me/data", view.token, "my-livecommerce-data.json");
  note(el.dataNote, status < 300 ? "Downloaded." : `Could not get your data (${status}).`,
    status < 300 ? "ok" : "error", 0);
});
el.dataErase.addEventListener("click", async () => {
  el.dataDialog.close();
  const ok = await confirmAction({
    title: "Erase your data?", confirm: "Erase my data", danger: true,
    text: "Your messages are deleted and your name is taken off your orders, entries and "
      + "bids. This cannot be undone.",
  });
  if (!ok) return;
  const res = await fetch("/api/me/data", {
    method: "DELETE", headers: { Authorization: `Bearer ${view.token}` },
  });
  note(el.hint, res.ok ? "Your data is erased." : `Erasing failed (${res.status}).`, "info", 0);
});
el.reportCancel.addEventListener("click", () => el.reportDialog.close());
el.reportForm.addEventListener("submit", async (e) => {
  e.preventDefault();
  /** @type {Record<string, any>} */
  const fields = { room: ROOM, reason: el.reportReason.value };
  if (reporting) fields.msg_id = reporting;
  if (el.reportNote.value.trim()) fields.note = el.reportNote.value.trim();
  el.reportDialog.close();
  try {
    await client.send("report", fields);
    note(el.hint, "Thank you: the moderators will look at it.");
  } catch (err) {
    note(el.hint, err?.code === "not_found" ? "That message is no longer in the chat." : explain(err));
  }
});
el.auForm.addEventListener("submit", (e) => {
  e.preventDefault();
  placeBid();
});
el.gwCheck.addEventListener("click", checkDraw);

el.composer.addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = el.chatText.value.trim();
  if (!text || el.chatSend.disabled) return;
  el.chatText.value = "";
  try {
    const sent = await client.send("chat", { room: ROOM, text });
    if (sent.entered) { // the giveaway's keyword: this comment entered it
      view.entered = true;
      renderGiveaway();
    }
    feed.follow();
  } catch (err) {
    if (!el.chatText.value) el.chatText.value = text; // give it back to edit or resend
    note(el.hint, explain(err));
  }
});

el.like.addEventListener("click", () => {
  if (!view.user) {
    note(el.hint, "Sign in to send likes.");
    return;
  }
  if (client.state !== "live" || view.status !== "live") return;
  view.ownTaps += 1;
  likes.tap();
  hearts.burst(1);
  renderFigures();
  el.like.classList.remove("pop");
  void el.like.offsetWidth; // restart the CSS pop animation
  el.like.classList.add("pop");
});

setInterval(tick, 250);

// -- start -------------------------------------------------------------------------

renderAll();
player.start();
start(sessionStorage.getItem(TOKEN_KEY)).catch((err) => {
  el.conn.textContent = explain(err);
});
