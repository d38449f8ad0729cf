/**
 * The host studio, `/studio.html?room=<id>`: run a live show.
 *
 * Sign in (demo sign-in or a pasted host token), pick or create a show, go live and
 * end it, preview the camera and broadcast it ("Go live on camera": WHIP, H.264
 * preferred, see `/js/video.js`), edit the product lineup, pin products, run flash
 * sales (live countdown and stock bar per open sale), announce, chat, and follow the
 * live figures of the `stats` event (see docs/protocol.md, "Additions to protocol v1").
 *
 * One {@link LiveClient} (of `/js/client.js`) carries everything and resumes the room
 * after a reconnect; the banner says "Reconnecting…" meanwhile.
 *
 * Query parameters: `room` (the show to open), `currency` (ISO code for prices,
 * default USD), `max_messages` (chat messages kept on the page, default 200).
 *
 * For tests and debugging, `window.__live` exposes `{client, view, broadcast}`; the
 * page never reads it.
 *
 * @module studio
 */

import { LiveClient } from "/js/client.js";
import { clock, count, currencyOf, formatDuration, Money, timeOfDay } from "/js/format.js";
import { explain, Session } from "/js/session.js";
import {
  applyCouponEvent, applyGiveawayEvent, byId, ChatList, minuteChart, confirmAction, messageNode, note, showConnection,
} from "/js/ui.js";
import { Broadcast } from "/js/video.js";

// -- configuration ---------------------------------------------------------------

const params = new URLSearchParams(location.search);
const money = new Money(currencyOf(params.get("currency")));
const MAX_MESSAGES = Math.max(20, Number.parseInt(params.get("max_messages") ?? "", 10) || 200);
/** How long an ended sale stays in the list, greyed out. */
const ENDED_SALE_MS = 60_000;

const session = new Session("livecommerce.studio.token");

// -- DOM -------------------------------------------------------------------------

const el = {
  title: byId("title"), showStatus: byId("show-status"), topFigures: byId("top-figures"),
  topViewers: byId("top-viewers"), topLikes: byId("top-likes"), me: byId("me"),
  switchShow: byId("switch-show"), signOut: byId("sign-out"), conn: byId("conn"),
  gateSignIn: byId("gate-sign-in"), demoSignIn: /** @type {HTMLButtonElement} */ (byId("demo-sign-in")),
  tokenForm: byId("token-form"), tokenInput: /** @type {HTMLInputElement} */ (byId("token-input")),
  signInNote: byId("sign-in-note"),
  gateShows: byId("gate-shows"), showList: byId("show-list"), noShows: byId("no-shows"),
  createForm: byId("create-form"), createTitle: /** @type {HTMLInputElement} */ (byId("create-title")),
  createId: /** @type {HTMLInputElement} */ (byId("create-id")), createNote: byId("create-note"),
  studio: byId("studio"),
  cameraState: byId("camera-state"), preview: /** @type {HTMLVideoElement} */ (byId("preview")),
  previewOff: byId("preview-off"), previewLive: byId("preview-live"), previewBox: byId("preview-box"),
  broadcastStart: /** @type {HTMLButtonElement} */ (byId("broadcast-start")),
  broadcastStop: /** @type {HTMLButtonElement} */ (byId("broadcast-stop")),
  broadcastState: byId("broadcast-state"),
  cameraToggle: /** @type {HTMLButtonElement} */ (byId("camera-toggle")),
  viewerLink: /** @type {HTMLAnchorElement} */ (byId("viewer-link")), showLine: byId("show-line"),
  goLive: /** @type {HTMLButtonElement} */ (byId("go-live")),
  endShow: /** @type {HTMLButtonElement} */ (byId("end-show")), showNote: byId("show-note"),
  figuresAge: byId("figures-age"), stViewers: byId("st-viewers"), stPeak: byId("st-peak"),
  stLikes: byId("st-likes"), stChats: byId("st-chats"), stOrders: byId("st-orders"),
  stUnits: byId("st-units"), stRevenue: byId("st-revenue"), stProducts: byId("st-products"),
  productNew: byId("product-new"), productList: byId("product-list"),
  noProducts: byId("no-products"), productForm: byId("product-form"),
  productFormTitle: byId("product-form-title"),
  pfSku: /** @type {HTMLInputElement} */ (byId("pf-sku")),
  pfPrice: /** @type {HTMLInputElement} */ (byId("pf-price")),
  pfTitle: /** @type {HTMLInputElement} */ (byId("pf-title")),
  pfImage: /** @type {HTMLInputElement} */ (byId("pf-image")),
  pfSave: /** @type {HTMLButtonElement} */ (byId("pf-save")), pfCancel: byId("pf-cancel"),
  productNote: byId("product-note"),
  saleList: byId("sale-list"), noSales: byId("no-sales"), saleForm: byId("sale-form"),
  sfProduct: /** @type {HTMLSelectElement} */ (byId("sf-product")),
  sfPriceB: /** @type {HTMLInputElement} */ (byId("sf-price-b")),
  sfPrice: /** @type {HTMLInputElement} */ (byId("sf-price")),
  sfStock: /** @type {HTMLInputElement} */ (byId("sf-stock")),
  sfLimit: /** @type {HTMLInputElement} */ (byId("sf-limit")),
  sfDuration: /** @type {HTMLInputElement} */ (byId("sf-duration")),
  sfStart: /** @type {HTMLButtonElement} */ (byId("sf-start")), saleNote: byId("sale-note"),
  auLive: byId("au-live"), auTitle: byId("au-title"), auPrice: byId("au-price"),
  auLeader: byId("au-leader"), auBids: byId("au-bids"), auClock: byId("au-clock"),
  auExt: byId("au-ext"), auLast: byId("au-last"), auctionForm: byId("auction-form"),
  auctionNote: byId("auction-note"), afProduct: /** @type {HTMLSelectElement} */ (byId("af-product")),
  afStart: /** @type {HTMLInputElement} */ (byId("af-start")),
  afDuration: /** @type {HTMLInputElement} */ (byId("af-duration")),
  afExtend: /** @type {HTMLInputElement} */ (byId("af-extend")),
  afCap: /** @type {HTMLInputElement} */ (byId("af-cap")),
  afStartBtn: /** @type {HTMLButtonElement} */ (byId("af-start-btn")),
  stChart: byId("st-chart"), stRates: byId("st-rates"),
  reportLink: /** @type {HTMLAnchorElement} */ (byId("report-link")),
  dealList: byId("deal-list"), noDeals: byId("no-deals"), dealForm: byId("deal-form"),
  dealNote: byId("deal-note"), gdProduct: /** @type {HTMLSelectElement} */ (byId("gd-product")),
  gdPrice: /** @type {HTMLInputElement} */ (byId("gd-price")),
  gdSize: /** @type {HTMLInputElement} */ (byId("gd-size")),
  gdWindow: /** @type {HTMLInputElement} */ (byId("gd-window")),
  gdStock: /** @type {HTMLInputElement} */ (byId("gd-stock")),
  gdStart: /** @type {HTMLButtonElement} */ (byId("gd-start")),
  gwLive: byId("gw-live"), gwPrize: byId("gw-prize"), gwCount: byId("gw-count"),
  gwEntries: byId("gw-entries"), gwClock: byId("gw-clock"), gwHow: byId("gw-how"),
  gwDraw: /** @type {HTMLButtonElement} */ (byId("gw-draw")),
  gwCancel: /** @type {HTMLButtonElement} */ (byId("gw-cancel")), gwDone: byId("gw-done"),
  gwWinners: byId("gw-winners"), gwProof: /** @type {HTMLAnchorElement} */ (byId("gw-proof")),
  giveawayForm: byId("giveaway-form"), giveawayNote: byId("giveaway-note"),
  gfProduct: /** @type {HTMLSelectElement} */ (byId("gf-product")),
  gfPrize: /** @type {HTMLInputElement} */ (byId("gf-prize")),
  gfWinners: /** @type {HTMLInputElement} */ (byId("gf-winners")),
  gfDuration: /** @type {HTMLInputElement} */ (byId("gf-duration")),
  gfEntry: /** @type {HTMLSelectElement} */ (byId("gf-entry")),
  gfKeyword: /** @type {HTMLInputElement} */ (byId("gf-keyword")),
  gfWatch: /** @type {HTMLInputElement} */ (byId("gf-watch")),
  gfVerified: /** @type {HTMLInputElement} */ (byId("gf-verified")),
  gfStart: /** @type {HTMLButtonElement} */ (byId("gf-start")),
  couponList: byId("coupon-list"), noCoupons: byId("no-coupons"), couponForm: byId("coupon-form"),
  cfKind: /** @type {HTMLSelectElement} */ (byId("cf-kind")), cfUnit: byId("cf-unit"),
  cfValue: /** @type {HTMLInputElement} */ (byId("cf-value")),
  cfQuantity: /** @type {HTMLInputElement} */ (byId("cf-quantity")),
  cfPerUser: /** @type {HTMLInputElement} */ (byId("cf-per-user")),
  cfMin: /** @type {HTMLInputElement} */ (byId("cf-min")),
  cfMinutes: /** @type {HTMLInputElement} */ (byId("cf-minutes")),
  cfWatch: /** @type {HTMLInputElement} */ (byId("cf-watch")),
  cfDrop: /** @type {HTMLButtonElement} */ (byId("cf-drop")), couponNote: byId("coupon-note"),
  announcement: byId("announcement"), announceForm: byId("announce-form"),
  announceText: /** @type {HTMLInputElement} */ (byId("announce-text")),
  announceNote: byId("announce-note"),
  slowState: byId("slow-state"), feed: byId("feed"), jump: byId("jump"),
  composer: byId("composer"), chatText: /** @type {HTMLInputElement} */ (byId("chat-text")),
  chatSend: /** @type {HTMLButtonElement} */ (byId("chat-send")), chatNote: byId("chat-note"),
};

for (const node of document.querySelectorAll(".currency-code")) node.textContent = money.currency;

// -- state -----------------------------------------------------------------------

/**
 * Everything the studio shows.
 * @type {{
 *   user: {id: string, name: string, role: string} | null,
 *   room: string | null, joined: boolean, title: string, status: string, host: string,
 *   viewers: number, likes: number, slow: number,
 *   pinned: {sku: string, title: string, price: number, image: string | null} | null,
 *   products: Map<string, {sku: string, title: string, price: number, image: string | null}>,
 *   sales: Map<string, any>, ended: Map<string, {sale: any, reason: string, at: number}>,
 *   stats: any | null, editing: string | null, priceTouched: boolean,
 *   coupons: Map<string, any>, giveaway: any, deals: Map<string, any>,
 *   forming: Map<string, number>, filled: Map<string, number>, failed: Map<string, number>,
 *   auction: any,
 * }}
 */
const view = {
  user: null, room: null, joined: false, title: "", status: "", host: "",
  viewers: 0, likes: 0, slow: 0, pinned: null, products: new Map(), sales: new Map(),
  ended: new Map(), stats: null, editing: null, priceTouched: false, coupons: new Map(),
  giveaway: null, deals: new Map(), forming: new Map(), filled: new Map(), failed: new Map(),
  auction: null,
};

// -- the connection ----------------------------------------------------------------

const feed = new ChatList(el.feed, el.jump, { max: MAX_MESSAGES, render: chatLine });

const client = new LiveClient({
  onEvent,
  onJoin,
  onState,
  onError: (err) => {
    if (err.op === "join" && err.room === view.room) joinFailed(err);
  },
  refreshToken: () => session.refresh(),
});

window.__live = {
  client,
  view,
  get broadcast() {
    return broadcast;
  },
};

/**
 * @param {string} state
 * @param {{reason?: string}} detail
 */
function onState(state, detail) {
  showConnection(el.conn, state, detail);
  if (state === "closed" && detail.reason === "unauthorized") {
    session.forget();
    showGate("sign-in");
    note(el.signInNote, "The server did not accept the sign-in. Sign in again.", "error", 0);
  }
  renderControls();
}

/**
 * After every (re)join of the open show: the room's state comes from the snapshot;
 * the chat is rebuilt only when the server could not replay what was missed.
 * @param {string} room
 * @param {any} snapshot
 * @param {boolean} recovered
 */
function onJoin(room, snapshot, recovered) {
  if (room !== view.room) return;
  view.joined = true;
  view.title = snapshot.title;
  view.status = snapshot.status;
  view.host = snapshot.host;
  view.viewers = snapshot.viewers;
  view.likes = snapshot.likes;
  view.pinned = snapshot.pinned;
  view.slow = snapshot.slow ?? 0;
  const sales = new Map();
  for (const sale of snapshot.sales ?? []) sales.set(sale.id, sale);
  view.sales = sales;
  view.coupons = new Map((snapshot.coupons ?? []).map((c) => [c.id, c]));
  loadReport();
  if (snapshot.giveaway || view.giveaway?.status === "open") view.giveaway = snapshot.giveaway;
  if (snapshot.auction || view.auction?.status === "open") view.auction = snapshot.auction;
  view.deals = new Map((snapshot.deals ?? []).map((d) => [d.id, d]));
  countForming(snapshot.groups ?? []);
  if (!recovered) feed.reset(snapshot.recent ?? []);
  showAnnouncement(snapshot.announcement);
  renderAll();
}

/** @param {any} ev */
function onEvent(ev) {
  if (ev.room !== view.room) return;
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
    case "likes":
      view.likes = ev.total;
      renderFigures();
      break;
    case "presence":
      view.viewers = ev.viewers;
      renderFigures();
      break;
    case "stats":
      view.stats = ev;
      view.viewers = ev.viewers;
      view.likes = Math.max(view.likes, ev.likes);
      renderFigures();
      break;
    case "product.pinned":
      view.pinned = ev.product;
      renderProducts();
      break;
    case "product.unpinned":
      if (view.pinned?.sku === ev.product.sku) view.pinned = null;
      renderProducts();
      break;
    case "sale.started": {
      const known = view.sales.get(ev.sale.id);
      view.sales.set(ev.sale.id, { remaining: known?.remaining ?? ev.sale.stock, ...ev.sale });
      renderSales();
      break;
    }
    case "stock": {
      const sale = view.sales.get(ev.sale_id);
      if (sale) {
        sale.remaining = ev.remaining;
        renderStock(sale);
      }
      break;
    }
    case "sale.ended": {
      const sale = view.sales.get(ev.sale_id);
      view.sales.delete(ev.sale_id);
      if (sale) view.ended.set(sale.id, { sale, reason: ev.reason, at: Date.now() });
      renderSales();
      break;
    }
    case "coupon.dropped":
    case "coupon.stock":
    case "coupon.ended":
      applyCouponEvent(view.coupons, ev);
      renderCoupons();
      break;
    case "auction.started":
    case "auction.ended":
      view.auction = ev.auction;
      renderAuction();
      break;
    case "auction.bid":
      if (view.auction?.id === ev.auction_id) {
        Object.assign(view.auction, {
          price: ev.price, leader: ev.leader, bids: ev.bids, ends_at: ev.ends_at,
        });
        renderAuction();
      }
      break;
    case "auction.extended":
      if (view.auction?.id === ev.auction_id) {
        Object.assign(view.auction, { ends_at: ev.ends_at, extensions: ev.extensions });
        renderAuction();
      }
      break;
    case "deal.started":
      view.deals.set(ev.deal.id, ev.deal);
      renderDeals();
      break;
    case "deal.ended":
      view.deals.delete(ev.deal_id);
      renderDeals();
      break;
    case "group.forming":
      countForming(ev.groups);
      renderDeals();
      break;
    case "group.filled":
    case "group.failed": {
      const tally = ev.type === "group.filled" ? view.filled : view.failed;
      tally.set(ev.group.deal, (tally.get(ev.group.deal) ?? 0) + 1);
      renderDeals();
      break;
    }
    case "giveaway.started":
    case "giveaway.entries":
    case "giveaway.drawn":
    case "giveaway.cancelled":
      view.giveaway = applyGiveawayEvent(view.giveaway, ev);
      renderGiveaway();
      break;
    case "room.started":
      view.status = "live";
      renderAll();
      break;
    case "room.ended":
      view.status = "ended";
      stopBroadcast(); // the server does not end the stream with the show
      renderAll();
      break;
    case "room.slow":
      view.slow = ev.seconds;
      renderHeader();
      break;
    default:
      break; // the server may add event types; ignore what we don't know
  }
}

/** @param {{code: string, message: string}} err a refused join of the open show */
function joinFailed(err) {
  view.joined = false;
  const why = err.code === "not_found" ? `There is no show "${view.room}".` : explain(err);
  closeShow();
  note(el.createNote, why, "error", 0);
}

// -- signing in and picking a show -----------------------------------------------------

/** @param {"sign-in" | "shows" | "studio"} which */
function showGate(which) {
  el.gateSignIn.hidden = which !== "sign-in";
  el.gateShows.hidden = which !== "shows";
  el.studio.hidden = which !== "studio";
  el.topFigures.hidden = which !== "studio";
  el.switchShow.hidden = which !== "studio";
  el.signOut.hidden = which === "sign-in";
  if (which !== "studio") {
    el.title.textContent = "Host studio";
    el.showStatus.textContent = "Studio";
    el.showStatus.dataset.status = "";
    document.title = "Host studio";
  }
}

/** Connect with the session's token and open `?room=` or the list of shows. */
async function start() {
  if (!session.token) {
    showGate("sign-in");
    return;
  }
  let hello;
  try {
    hello = await client.connect(session.token);
  } catch (err) {
    session.forget();
    showGate("sign-in");
    note(el.signInNote, explain(err), "error", 0);
    return;
  }
  if (!["host", "admin"].includes(hello.user.role)) {
    client.close();
    session.forget();
    showConnection(el.conn, "idle");
    showGate("sign-in");
    note(el.signInNote, `That sign-in is a ${hello.user.role}: the studio needs a host.`, "error", 0);
    return;
  }
  view.user = hello.user;
  el.me.textContent = `Signed in as ${hello.user.name}`;
  const room = params.get("room");
  if (room) await openShow(room);
  else await listShows();
}

/** May the signed-in user run `room` (as the server decides it)? */
function canHost(room, host) {
  const user = view.user;
  if (!user) return false;
  if (user.role === "admin") return true;
  return user.role === "host" && (host === user.id || (session.claims?.rooms ?? []).includes(room));
}

async function listShows() {
  showGate("shows");
  let rooms = [];
  try {
    ({ rooms } = await session.api("/api/rooms"));
  } catch (err) {
    note(el.createNote, explain(err), "error", 0);
  }
  const mine = rooms.filter((r) => canHost(r.id, r.host));
  el.noShows.hidden = mine.length > 0;
  el.showList.replaceChildren(...mine.map(showItem));
}

/** @param {{id: string, title: string, status: string}} room @returns {HTMLElement} */
function showItem(room) {
  const li = document.createElement("li");
  li.className = "show-item";
  const pill = document.createElement("span");
  pill.className = "pill";
  pill.dataset.status = room.status;
  pill.textContent = STATUS_LABELS[room.status] ?? room.status;
  const what = document.createElement("span");
  what.className = "show-what";
  const title = document.createElement("strong");
  title.textContent = room.title;
  const id = document.createElement("span");
  id.className = "muted small";
  id.textContent = room.id;
  what.append(title, id);
  const open = document.createElement("button");
  open.type = "button";
  open.className = "btn btn-small";
  open.textContent = "Open";
  open.setAttribute("aria-label", `Open ${room.title}`);
  open.addEventListener("click", () => openShow(room.id));
  li.append(pill, what, open);
  return li;
}

/** @param {string} room */
async function openShow(room) {
  view.room = room;
  view.joined = false;
  view.stats = null;
  view.products = new Map();
  view.sales = new Map();
  view.ended = new Map();
  view.pinned = null;
  const url = new URL(location.href);
  url.searchParams.set("room", room);
  history.replaceState(null, "", url);
  el.viewerLink.href = `/watch.html?room=${encodeURIComponent(room)}`;
  showGate("studio");
  feed.reset([]);
  renderAll();
  try {
    await client.join(room);
  } catch (err) {
    if (view.room === room) joinFailed(err);
    return;
  }
  if (!canHost(room, view.host)) {
    note(el.showNote, "You are not the host of this show: you can watch it but not run it.",
      "error", 0);
  }
  await loadProducts();
}

/** Leave the open show and go back to the list. */
function closeShow() {
  const room = view.room;
  view.room = null;
  view.joined = false;
  if (room) client.leave(room).catch(() => {});
  stopCamera();
  const url = new URL(location.href);
  url.searchParams.delete("room");
  history.replaceState(null, "", url);
  listShows();
}

// -- products ------------------------------------------------------------------------

async function loadProducts() {
  const room = view.room;
  if (!room) return;
  try {
    const { products } = await session.api(`/api/rooms/${encodeURIComponent(room)}/products`);
    if (room !== view.room) return;
    view.products = new Map(products.map((p) => [p.sku, p]));
  } catch (err) {
    note(el.productNote, explain(err), "error");
  }
  renderProducts();
}

/** @param {any | null} product the product to edit, or null to add one */
function editProduct(product) {
  view.editing = product ? product.sku : null;
  el.productForm.hidden = false;
  el.productFormTitle.textContent = product ? `Edit ${product.title}` : "Add a product";
  el.pfSku.value = product?.sku ?? "";
  el.pfSku.readOnly = Boolean(product);
  el.pfTitle.value = product?.title ?? "";
  el.pfPrice.value = product ? money.toInput(product.price) : "";
  el.pfImage.value = product?.image ?? "";
  note(el.productNote, "");
  (product ? el.pfTitle : el.pfSku).focus();
}

async function saveProduct() {
  const sku = el.pfSku.value.trim();
  const title = el.pfTitle.value.trim();
  const price = money.parse(el.pfPrice.value);
  const image = el.pfImage.value.trim();
  if (!sku || !title) return;
  if (price === null) {
    note(el.productNote, `Enter the price in ${money.currency}, like 18.00.`, "error");
    el.pfPrice.focus();
    return;
  }
  /** @type {{title: string, price: number, image?: string}} */
  const body = { title, price };
  if (image) body.image = image;
  el.pfSave.disabled = true;
  try {
    const path = `/api/rooms/${encodeURIComponent(view.room ?? "")}/products/${encodeURIComponent(sku)}`;
    const saved = await session.api(path, { method: "PUT", body });
    view.products.set(saved.sku, saved);
    renderProducts();
    el.productForm.hidden = true;
    view.editing = null;
    const pinnedNow = view.pinned?.sku === saved.sku;
    note(el.productNote, "");
    note(el.saleNote, "");
    flashProduct(saved.sku, pinnedNow ? "Saved. Pin it again to show the change." : "Saved.");
  } catch (err) {
    note(el.productNote, explain(err), "error");
  } finally {
    el.pfSave.disabled = false;
  }
}

/** A short "Saved." next to a product of the list. @param {string} sku @param {string} text */
function flashProduct(sku, text) {
  const li = el.productList.querySelector(`[data-sku="${CSS.escape(sku)}"] .product-note`);
  if (li instanceof HTMLElement) note(li, text, "ok", 4000);
}

/** @param {string} sku @param {boolean} pin */
async function setPinned(sku, pin) {
  try {
    await client.send(pin ? "pin" : "unpin", { room: view.room, sku });
  } catch (err) {
    flashProduct(sku, explain(err));
  }
}

function renderProducts() {
  const products = [...view.products.values()];
  el.noProducts.hidden = products.length > 0;
  // Keep the keyboard focus on the same button of the same product across re-renders.
  const focused = document.activeElement;
  const focusSku = el.productList.contains(focused)
    ? focused?.closest("[data-sku]")?.getAttribute("data-sku") : null;
  const focusRole = focused instanceof HTMLElement ? focused.dataset.action : undefined;
  el.productList.replaceChildren(...products.map(productItem));
  if (focusSku && focusRole) {
    const again = el.productList.querySelector(
      `[data-sku="${CSS.escape(focusSku)}"] [data-action="${focusRole}"]`);
    if (again instanceof HTMLElement) again.focus();
  }
  // The auction's lot menu too.
  const auctioned = el.afProduct.value;
  el.afProduct.replaceChildren(...products.map((p) => new Option(p.title, p.sku)));
  if (view.products.has(auctioned)) el.afProduct.value = auctioned;
  // The group buy's product menu too.
  const grouped = el.gdProduct.value;
  el.gdProduct.replaceChildren(
    ...products.map((p) => new Option(`${p.title} (${money.format(p.price)})`, p.sku)),
  );
  if (view.products.has(grouped)) el.gdProduct.value = grouped;
  // The giveaway's prize menu too (or a prize of text alone).
  const prize = el.gfProduct.value;
  el.gfProduct.replaceChildren(new Option("A prize of text (below)", ""),
    ...products.map((p) => new Option(p.title, p.sku)));
  if (view.products.has(prize)) el.gfProduct.value = prize;
  // The sale form's product menu follows the lineup.
  const chosen = el.sfProduct.value;
  el.sfProduct.replaceChildren(
    ...products.map((p) => new Option(`${p.title} (${money.format(p.price)})`, p.sku)),
  );
  if (view.products.has(chosen)) el.sfProduct.value = chosen;
  else if (view.pinned && view.products.has(view.pinned.sku)) el.sfProduct.value = view.pinned.sku;
  if (!view.priceTouched) suggestSalePrice();
  renderFigures();
  renderControls();
}

/** @param {{sku: string, title: string, price: number, image: string | null}} p */
function productItem(p) {
  const li = document.createElement("li");
  li.className = "product-item";
  li.dataset.sku = p.sku;
  const pinned = view.pinned?.sku === p.sku;
  li.dataset.pinned = String(pinned);
  const media = document.createElement("span");
  media.className = "thumb";
  if (p.image && /^(https?:|data:image\/)/i.test(p.image)) {
    const img = document.createElement("img");
    img.src = p.image;
    img.alt = "";
    img.decoding = "async";
    media.append(img);
  } else {
    media.textContent = (p.title.trim()[0] ?? "?").toUpperCase();
    media.setAttribute("aria-hidden", "true");
  }
  const info = document.createElement("span");
  info.className = "product-info";
  const title = document.createElement("strong");
  title.className = "product-title";
  title.textContent = p.title;
  const meta = document.createElement("span");
  meta.className = "muted small";
  meta.textContent = `${p.sku} · ${money.format(p.price)}`;
  const status = document.createElement("span");
  status.className = "product-note small";
  status.setAttribute("role", "status");
  info.append(title, meta, status);
  if (pinned) {
    const tag = document.createElement("span");
    tag.className = "tag tag-pinned";
    tag.textContent = "Pinned";
    title.append(" ", tag);
  }
  const actions = document.createElement("span");
  actions.className = "product-actions";
  const pin = document.createElement("button");
  pin.type = "button";
  pin.className = pinned ? "btn btn-small btn-quiet" : "btn btn-small";
  pin.textContent = pinned ? "Unpin" : "Pin";
  pin.setAttribute("aria-label", `${pinned ? "Unpin" : "Pin"} ${p.title}`);
  pin.dataset.action = "pin";
  pin.disabled = client.state !== "live";
  pin.addEventListener("click", () => setPinned(p.sku, !pinned));
  const edit = document.createElement("button");
  edit.type = "button";
  edit.className = "btn btn-small btn-quiet";
  edit.textContent = "Edit";
  edit.setAttribute("aria-label", `Edit ${p.title}`);
  edit.dataset.action = "edit";
  edit.addEventListener("click", () => editProduct(p));
  actions.append(pin, edit);
  li.append(media, info, actions);
  return li;
}

// -- flash sales -------------------------------------------------------------------------

function suggestSalePrice() {
  const p = view.products.get(el.sfProduct.value);
  el.sfPrice.value = p ? money.toInput(p.price) : "";
}

async function startSale() {
  const sku = el.sfProduct.value;
  const price = money.parse(el.sfPrice.value);
  const stock = Number(el.sfStock.value);
  const limit = Number(el.sfLimit.value);
  const durationS = Math.round(Number(el.sfDuration.value) * 60);
  if (!sku) {
    note(el.saleNote, "Add a product to the lineup first.", "error");
    return;
  }
  if (price === null) {
    note(el.saleNote, `Enter the sale price in ${money.currency}, like 12.00.`, "error");
    el.sfPrice.focus();
    return;
  }
  if (!Number.isInteger(stock) || !Number.isInteger(limit) || !(durationS >= 1)) return;
  if (limit > stock) {
    note(el.saleNote, "The limit per person cannot be more than the stock.", "error");
    el.sfLimit.focus();
    return;
  }
  /** @type {Record<string, any>} */
  const fields = {
    room: view.room, sku, price, stock, limit_per_user: limit, duration_s: durationS,
  };
  if (el.sfPriceB.value.trim()) {  // an A/B test: half the buyers (by id) pay price B
    const priceB = money.parse(el.sfPriceB.value);
    if (priceB === null || priceB === price) {
      note(el.saleNote, "Price B must be another price, like 9.00 (or leave it empty).", "error");
      el.sfPriceB.focus();
      return;
    }
    fields.price_b = priceB;
  }
  el.sfStart.disabled = true;
  note(el.saleNote, "Starting…", "info");
  try {
    const { sale } = await client.send("sale.start", fields);
    const known = view.sales.get(sale.id);
    view.sales.set(sale.id, { ...sale, remaining: known?.remaining ?? sale.remaining ?? sale.stock });
    renderSales();
    note(el.saleNote, `Sale started: ${sale.stock} × ${sale.title} at ${money.format(sale.price)}.`, "ok");
    view.priceTouched = false;
  } catch (err) {
    note(el.saleNote, err?.code === "room_not_live"
      ? "Go live first: sales run only during the show." : explain(err), "error");
  } finally {
    renderControls();
  }
}

/** @param {string} saleId */
async function stopSale(saleId) {
  const sale = view.sales.get(saleId);
  const ok = await confirmAction({
    title: "Stop this sale?",
    text: `${sale?.title ?? "The sale"} stops now for everyone; reservations already made stay.`,
    confirm: "Stop sale",
    danger: true,
  });
  if (!ok) return;
  try {
    await client.send("sale.stop", { room: view.room, sale: saleId });
  } catch (err) {
    note(el.saleNote, explain(err), "error");
  }
}

const END_REASONS = { sold_out: "Sold out", stopped: "Stopped", expired: "Time's up" };

function renderSales() {
  const now = Date.now();
  for (const [id, ended] of view.ended) if (now - ended.at > ENDED_SALE_MS) view.ended.delete(id);
  const open = [...view.sales.values()].sort((a, b) => b.starts_at - a.starts_at);
  const ended = [...view.ended.values()].sort((a, b) => b.at - a.at);
  el.noSales.hidden = open.length > 0;
  el.saleList.replaceChildren(
    ...open.map((s) => saleItem(s, null)),
    ...ended.map((e) => saleItem(e.sale, e.reason)),
  );
  tick();
}

/**
 * @param {any} sale
 * @param {string | null} reason why it ended, or null while open
 * @returns {HTMLElement}
 */
function saleItem(sale, reason) {
  const li = document.createElement("li");
  li.className = "sale-item";
  li.dataset.saleId = sale.id;
  li.dataset.state = reason ? "ended" : "open";
  const head = document.createElement("div");
  head.className = "sale-head";
  const title = document.createElement("strong");
  title.textContent = sale.title;
  const price = document.createElement("span");
  price.className = "sale-price";
  price.textContent = money.format(sale.price);
  const timer = document.createElement("span");
  timer.className = "countdown";
  if (reason) {
    timer.textContent = END_REASONS[reason] ?? "Ended";
  } else {
    timer.setAttribute("role", "timer");
    timer.dataset.endsAt = String(sale.ends_at);
  }
  head.append(title, price, timer);
  const stock = document.createElement("div");
  stock.className = "stock-row";
  const bar = document.createElement("div");
  bar.className = "stock-bar";
  bar.setAttribute("role", "progressbar");
  bar.setAttribute("aria-label", `Units left of ${sale.title}`);
  bar.setAttribute("aria-valuemin", "0");
  const fill = document.createElement("div");
  fill.className = "stock-fill";
  bar.append(fill);
  const text = document.createElement("span");
  text.className = "stock-text";
  stock.append(bar, text);
  const foot = document.createElement("div");
  foot.className = "sale-foot";
  const limit = document.createElement("span");
  limit.className = "muted small";
  limit.textContent = `Limit ${sale.limit_per_user} per person`;
  foot.append(limit);
  if (!reason) {
    const stop = document.createElement("button");
    stop.type = "button";
    stop.className = "btn btn-small btn-danger";
    stop.textContent = "Stop";
    stop.setAttribute("aria-label", `Stop the sale of ${sale.title}`);
    stop.addEventListener("click", () => stopSale(sale.id));
    foot.append(stop);
  }
  li.append(head, stock, foot);
  renderStock(sale, li, reason);
  return li;
}

/**
 * @param {any} sale
 * @param {HTMLElement | null} [item] its list item (found by id when omitted)
 * @param {string | null} [reason] why it ended
 */
function renderStock(sale, item = null, reason = null) {
  const li = item ?? el.saleList.querySelector(`[data-sale-id="${CSS.escape(sale.id)}"]`);
  if (!li) return;
  const remaining = reason === "sold_out" ? 0 : Math.max(0, sale.remaining ?? sale.stock);
  const ratio = sale.stock ? remaining / sale.stock : 0;
  const bar = /** @type {HTMLElement} */ (li.querySelector(".stock-bar"));
  const fill = /** @type {HTMLElement} */ (li.querySelector(".stock-fill"));
  const text = /** @type {HTMLElement} */ (li.querySelector(".stock-text"));
  fill.style.transform = `scaleX(${ratio})`;
  bar.dataset.level = ratio <= 0.2 ? "low" : "ok";
  bar.setAttribute("aria-valuemax", String(sale.stock));
  bar.setAttribute("aria-valuenow", String(remaining));
  text.textContent = `${remaining} of ${sale.stock} left`;
}

// -- the show ------------------------------------------------------------------------------

async function goLive() {
  const ok = await confirmAction({
    title: "Go live now?",
    text: "Viewers can chat, like and buy as soon as the show is live.",
    confirm: "Go live",
  });
  if (!ok) return;
  try {
    await client.send("room.start", { room: view.room });
    note(el.showNote, "You are live!", "ok");
  } catch (err) {
    note(el.showNote, explain(err), "error");
  }
}

async function endShow() {
  const ok = await confirmAction({
    title: "End the show?",
    text: "The show ends for everyone. It cannot be started again.",
    confirm: "End show",
    danger: true,
  });
  if (!ok) return;
  try {
    await client.send("room.end", { room: view.room });
    note(el.showNote, "The show has ended.", "info");
  } catch (err) {
    note(el.showNote, explain(err), "error");
  }
}

// -- camera and broadcast ---------------------------------------------------------------

/** What the studio asks of the camera: 640x360 at 30 fps (the server relays it as it is). */
const CAMERA = {
  video: { width: { ideal: 640 }, height: { ideal: 360 }, frameRate: { ideal: 30 } },
  audio: true,
};

/** @type {MediaStream | null} */
let stream = null;
/** The camera broadcast (WHIP), while it connects, is live or has failed. @type {Broadcast | null} */
let broadcast = null;
/** Why the camera could not start, for the broadcast's state line. */
let cameraError = "";

/**
 * @param {"off" | "starting" | "on" | "error"} state
 * @param {string} text
 */
function cameraState(state, text) {
  el.cameraState.dataset.state = state;
  el.cameraState.textContent = text;
  const on = state === "on";
  el.cameraToggle.setAttribute("aria-pressed", String(on));
  el.cameraToggle.textContent = on ? "Turn camera off" : "Turn camera on";
  el.cameraToggle.disabled = state === "starting";
  el.previewOff.hidden = on;
  el.preview.hidden = !on;
}

/** @returns {Promise<boolean>} the camera is on */
async function startCamera() {
  if (stream) return true;
  cameraError = "";
  if (!navigator.mediaDevices?.getUserMedia) {
    cameraError = "No camera access: open the studio over https.";
    cameraState("error", "No camera access: open the studio over https");
    return false;
  }
  cameraState("starting", "Starting camera…");
  let got;
  try {
    try {
      got = await navigator.mediaDevices.getUserMedia(CAMERA);
    } catch (err) {
      if (err?.name !== "NotFoundError" && err?.name !== "OverconstrainedError") throw err;
      got = await navigator.mediaDevices.getUserMedia({ video: CAMERA.video }); // no microphone
    }
  } catch (err) {
    const blocked = err?.name === "NotAllowedError" || err?.name === "SecurityError";
    cameraError = blocked
      ? "Camera blocked: allow the camera (and microphone) for this site in the browser, then try again."
      : err?.name === "NotFoundError" ? "No camera found: connect one and try again."
        : "The camera could not start (is another app using it?).";
    cameraState("error", blocked ? "Camera blocked: allow it in the browser"
      : err?.name === "NotFoundError" ? "No camera found" : "Camera unavailable");
    return false;
  }
  stream = got;
  el.preview.srcObject = stream;
  const track = stream.getVideoTracks()[0];
  track?.addEventListener("ended", () => stopCamera("Camera disconnected"));
  const mic = stream.getAudioTracks().length ? " · mic on" : "";
  cameraState("on", `Camera on${mic}`);
  return true;
}

/** Turn the camera off (which ends a broadcast). @param {string} [why] */
function stopCamera(why = "Camera off") {
  stopBroadcast();
  for (const track of stream?.getTracks() ?? []) track.stop();
  stream = null;
  el.preview.srcObject = null;
  cameraState("off", why);
}

/** "Go live on camera": the camera (turned on if off) goes to the server over WHIP. */
async function startBroadcast() {
  const room = view.room;
  if (!room || broadcast) return;
  el.broadcastStart.disabled = true;
  renderBroadcast("connecting", {});
  if (!(await startCamera()) || !stream || view.room !== room) {
    renderBroadcast("failed", { code: "camera", message: cameraError || "The camera is off." });
    return;
  }
  const b = (broadcast = new Broadcast({
    url: `/api/rooms/${encodeURIComponent(room)}/whip`,
    token: session.token,
    onState: (state, detail) => {
      if (broadcast === b) renderBroadcast(state, detail);
    },
  }));
  try {
    await b.start(stream);
  } catch {
    // onState("failed") said why; "Go live on camera" tries again.
    if (broadcast === b) broadcast = null;
  }
}

/**
 * Stop the broadcast, if any (DELETE its session on the server).
 * @param {{keepalive?: boolean}} [options] `keepalive` when the page goes away
 */
function stopBroadcast(options = {}) {
  const b = broadcast;
  broadcast = null;
  if (!b) return;
  b.stop(options);
  renderBroadcast("stopped", {});
}

/**
 * The broadcast's state line (a live region) and buttons.
 * @param {"off" | import("/js/video.js").BroadcastState} state
 * @param {{video?: string, audio?: string, status?: number, code?: string, message?: string}} detail
 */
function renderBroadcast(state, detail) {
  const busy = state === "connecting" || state === "live";
  el.broadcastState.dataset.state = state;
  el.previewBox.dataset.broadcast = state;
  el.broadcastStart.hidden = busy;
  el.broadcastStop.hidden = !busy;
  el.broadcastStart.textContent = state === "failed" ? "Try again" : "Go live on camera";
  if (state === "live") {
    const codecs = [detail.video, detail.audio].filter((c) => c && c !== "?").join(" + ");
    el.broadcastState.textContent = `Live on camera: viewers see you (${codecs})`;
  } else if (state === "connecting") {
    el.broadcastState.textContent = "Connecting the camera to the server…";
  } else if (state === "failed") {
    el.broadcastState.textContent = explainBroadcast(detail);
  } else {
    el.broadcastState.textContent = state === "stopped" ? "Broadcast stopped" : "Not broadcasting";
  }
  renderControls();
}

/**
 * @param {{status?: number, code?: string, message?: string}} err a refused or failed broadcast
 * @returns {string}
 */
function explainBroadcast(err) {
  if (err.code === "camera") return err.message ?? "The camera is off.";
  if (err.status === 409 && err.code === "conflict") {
    return "Not live: another device or tab is already broadcasting this show. Stop it there "
      + "(or wait a few seconds for it to drop), then try again.";
  }
  if (err.status === 401) return "Not live: the server did not accept your sign-in. Sign in again.";
  if (err.status === 403) return "Not live: only the host of this show may broadcast in it.";
  if (err.code === "room_not_live") return "Not live: this show has ended.";
  return `Broadcast failed: ${err.message || "the connection to the server failed"}`;
}

// -- chat and announcements ------------------------------------------------------------------

/**
 * One chat line ({@link messageNode}: text is always set as text, never parsed as
 * HTML), with its time of day as a tooltip.
 * @param {{msg_id: string, ts?: number, user: {id: string, name: string}, text: string}} ev
 * @returns {HTMLElement}
 */
function chatLine(ev) {
  const li = messageNode(ev, Boolean(view.user && ev.user.id === view.user.id));
  if (ev.ts) li.title = timeOfDay(ev.ts);
  return li;
}

/** @param {{text: string} | null} ev the latest announcement */
function showAnnouncement(ev) {
  el.announcement.hidden = !ev;
  el.announcement.textContent = ev ? ev.text : "";
}

// -- rendering -----------------------------------------------------------------------------------

const STATUS_LABELS = { live: "LIVE", scheduled: "Not live yet", ended: "Ended" };

function renderAll() {
  renderHeader();
  renderFigures();
  renderProducts();
  renderSales();
  renderCoupons();
  renderAuction();
  renderDeals();
  renderGiveaway();
  renderControls();
}

/** The lot under the hammer (price, leader, bids, clock), or how the last one ended. */
function renderAuction() {
  const a = view.auction;
  const open = a?.status === "open";
  el.auLive.hidden = !open;
  el.auctionForm.hidden = open;
  if (!a) return;
  el.auTitle.textContent = a.title;
  el.auPrice.textContent = a.leader ? money.format(a.price) : `from ${money.format(a.start_bid)}`;
  el.auLeader.textContent = a.leader ? `${a.leader.name} leads` : "no bids yet";
  el.auBids.textContent = `${count(a.bids)} ${a.bids === 1 ? "bid" : "bids"}`;
  el.auExt.textContent = a.extensions ? `(${a.extensions} late-bid extension${a.extensions > 1 ? "s" : ""})` : "";
  el.auLast.textContent = a.status === "ended"
    ? (a.leader ? `${a.title}: sold to ${a.leader.name} for ${money.format(a.price)}.`
      : `${a.title}: no bids.`) : "";
  tickAuction(clock.now());
}

/** @param {number} now */
function tickAuction(now) {
  const a = view.auction;
  if (a?.status !== "open") return;
  const left = a.ends_at - now;
  el.auClock.textContent = left > 0 ? `${formatDuration(left)} left` : "Closing…";
}

async function startAuction() {
  const start = money.parse(el.afStart.value);
  if (!start) {
    note(el.auctionNote, `Enter the starting bid in ${money.currency}, like 10.00.`, "error");
    el.afStart.focus();
    return;
  }
  /** @type {Record<string, any>} */
  const fields = {
    room: view.room, sku: el.afProduct.value, start_bid: start,
    duration_s: Number(el.afDuration.value), extend_s: Number(el.afExtend.value),
  };
  if (el.afCap.value) fields.max_extensions = Number(el.afCap.value);
  el.afStartBtn.disabled = true;
  try {
    const { auction } = await client.send("auction.start", fields);
    view.auction = auction;
    renderAuction();
  } catch (err) {
    note(el.auctionNote, explain(err), "error");
  } finally {
    el.afStartBtn.disabled = false;
  }
}

/** @param {any[]} groups the forming groups (as `group.forming` lists them) */
function countForming(groups) {
  view.forming = new Map();
  for (const g of groups) view.forming.set(g.deal, (view.forming.get(g.deal) ?? 0) + 1);
}

/** The group-buy deals: price, size, units left, groups forming, filled, failed; Stop. */
function renderDeals() {
  el.noDeals.hidden = view.deals.size > 0;
  el.dealList.replaceChildren(...[...view.deals.values()].map((d) => {
    const li = document.createElement("li");
    li.className = "sale-item deal-item";
    li.dataset.deal = d.id;
    const what = document.createElement("strong");
    what.textContent = `${d.title}: ${money.format(d.price)} × ${d.size}`;
    const figures = document.createElement("span");
    figures.className = "deal-figures";
    figures.textContent = `${view.forming.get(d.id) ?? 0} forming · `
      + `${view.filled.get(d.id) ?? 0} filled · ${view.failed.get(d.id) ?? 0} failed`;
    const stop = document.createElement("button");
    stop.type = "button";
    stop.className = "btn btn-small secondary";
    stop.textContent = "Stop";
    stop.setAttribute("aria-label", `Stop the group buy of ${d.title}`);
    stop.addEventListener("click", async () => {
      try {
        await client.send("deal.stop", { room: view.room, deal: d.id });
      } catch (err) {
        note(el.dealNote, explain(err), "error");
      }
    });
    li.append(what, figures, stop);
    return li;
  }));
}

async function startDeal() {
  const price = money.parse(el.gdPrice.value);
  if (price === null) {
    note(el.dealNote, `Enter the group price in ${money.currency}, like 12.00.`, "error");
    el.gdPrice.focus();
    return;
  }
  el.gdStart.disabled = true;
  try {
    const { deal } = await client.send("deal.start", {
      room: view.room, sku: el.gdProduct.value, price, size: Number(el.gdSize.value),
      window_minutes: Number(el.gdWindow.value), stock: Number(el.gdStock.value),
    });
    view.deals.set(deal.id, deal);
    renderDeals();
    note(el.dealNote, `Group buy on: groups of ${deal.size}.`, "ok", 4000);
  } catch (err) {
    note(el.dealNote, explain(err), "error");
  } finally {
    el.gdStart.disabled = false;
  }
}

/** The giveaway under way (entries, time left, Draw and Cancel) or its winners. */
function renderGiveaway() {
  const g = view.giveaway;
  const open = g?.status === "open";
  el.gwLive.hidden = !open;
  el.gwDone.hidden = g?.status !== "drawn";
  el.giveawayForm.hidden = open;
  if (!g) return;
  el.gwPrize.textContent = g.prize;
  el.gwCount.textContent = g.count > 1 ? `× ${g.count}` : "";
  el.gwEntries.textContent = `${count(g.entries)} ${g.entries === 1 ? "entry" : "entries"}`;
  el.gwHow.textContent = g.entry === "keyword" ? `Viewers comment “${g.keyword}” to enter.`
    : "Viewers press Enter.";
  if (g.status === "drawn") {
    el.gwWinners.textContent = g.winners.length
      ? `Winners of ${g.prize}: ${g.winners.join(", ")}` : "Drawn: no entrant was still watching.";
    el.gwProof.href = g.proof;
  }
  tickGiveaway(clock.now());
}

/** @param {number} now */
function tickGiveaway(now) {
  const g = view.giveaway;
  if (g?.status !== "open") return;
  const left = g.ends_at - now;
  el.gwClock.textContent = left > 0 ? `· ${formatDuration(left)} left` : "· drawing…";
}

async function startGiveaway() {
  /** @type {Record<string, any>} */
  const fields = {
    room: view.room, entry: el.gfEntry.value, winners: Number(el.gfWinners.value),
    duration_s: Number(el.gfDuration.value),
  };
  if (el.gfProduct.value) fields.sku = el.gfProduct.value;
  if (el.gfPrize.value.trim()) fields.prize = el.gfPrize.value.trim();
  if (!fields.sku && !fields.prize) {
    note(el.giveawayNote, "Choose a product or describe the prize.", "error");
    el.gfPrize.focus();
    return;
  }
  if (fields.entry === "keyword") fields.keyword = el.gfKeyword.value.trim();
  if (Number(el.gfWatch.value)) fields.watch_minutes = Number(el.gfWatch.value);
  if (el.gfVerified.checked) fields.verified_only = true;
  el.gfStart.disabled = true;
  try {
    const { giveaway } = await client.send("giveaway.start", fields);
    view.giveaway = giveaway;
    renderGiveaway();
    note(el.giveawayNote, "The giveaway is on.", "ok", 4000);
  } catch (err) {
    note(el.giveawayNote, explain(err), "error");
  } finally {
    el.gfStart.disabled = false;
  }
}

/** @param {"giveaway.draw" | "giveaway.cancel"} op */
async function endGiveaway(op) {
  const g = view.giveaway;
  if (!g) return;
  try {
    const data = await client.send(op, { room: view.room, giveaway: g.id });
    view.giveaway = data.giveaway ?? { ...g, status: "cancelled" };
    renderGiveaway();
  } catch (err) {
    note(el.giveawayNote, explain(err), "error");
  }
}

/** The live coupons: what each takes off, how many are left, and Stop. */
function renderCoupons() {
  el.noCoupons.hidden = view.coupons.size > 0;
  el.couponList.replaceChildren(...[...view.coupons.values()].map((c) => {
    const li = document.createElement("li");
    li.className = "sale-item coupon-item";
    li.dataset.coupon = c.id;
    const what = document.createElement("strong");
    what.textContent = c.kind === "percent" ? `${c.value}% off` : `${money.format(c.value)} off`;
    const left = document.createElement("span");
    left.className = "coupon-left";
    left.textContent = `${c.quantity - c.remaining} of ${c.quantity} claimed`;
    const stop = document.createElement("button");
    stop.type = "button";
    stop.className = "btn btn-small secondary";
    stop.textContent = "Stop";
    stop.setAttribute("aria-label", `Stop the coupon ${what.textContent}`);
    stop.addEventListener("click", async () => {
      try {
        await client.send("coupon.stop", { room: view.room, coupon: c.id });
      } catch (err) {
        note(el.couponNote, explain(err), "error");
      }
    });
    li.append(what, left, stop);
    return li;
  }));
}

async function dropCoupon() {
  const kind = el.cfKind.value;
  const value = kind === "percent" ? Number(el.cfValue.value) : money.parse(el.cfValue.value);
  if (value === null || !Number.isInteger(value) || value <= 0) {
    note(el.couponNote, kind === "percent" ? "Enter a percentage from 5 to 90."
      : `Enter the amount off in ${money.currency}, like 3.00.`, "error");
    el.cfValue.focus();
    return;
  }
  /** @type {Record<string, any>} */
  const fields = {
    room: view.room, kind, value,
    quantity: Number(el.cfQuantity.value), per_user: Number(el.cfPerUser.value),
  };
  const least = el.cfMin.value.trim() ? money.parse(el.cfMin.value) : 0;
  if (least === null) {
    note(el.couponNote, `Enter the minimum order in ${money.currency}, like 20.00.`, "error");
    return;
  }
  if (least) fields.min_total = least;
  if (el.cfMinutes.value) fields.minutes = Number(el.cfMinutes.value);
  if (Number(el.cfWatch.value)) fields.watch_minutes = Number(el.cfWatch.value);
  el.cfDrop.disabled = true;
  try {
    const { coupon } = await client.send("coupon.drop", fields);
    view.coupons.set(coupon.id, coupon);
    renderCoupons();
    note(el.couponNote, `Dropped: ${coupon.quantity} coupons.`, "ok", 4000);
  } catch (err) {
    note(el.couponNote, explain(err), "error");
  } finally {
    el.cfDrop.disabled = false;
  }
}

function renderHeader() {
  if (!view.room) return;
  el.title.textContent = view.title || view.room;
  document.title = view.title ? `${view.title} · studio` : "Host studio";
  el.showStatus.textContent = STATUS_LABELS[view.status] ?? "…";
  el.showStatus.dataset.status = view.status;
  el.previewLive.textContent = view.status === "live" ? "LIVE" : (STATUS_LABELS[view.status] ?? "…");
  el.previewLive.dataset.status = view.status;
  el.showLine.textContent = {
    scheduled: "The show has not started. Set up products, then go live.",
    live: "You are live. Viewers can chat, like and buy.",
    ended: "This show has ended.",
  }[view.status] ?? "Loading the show…";
  el.slowState.hidden = !view.slow;
  el.slowState.textContent = view.slow ? `Slow mode: ${view.slow} s` : "";
}

function renderFigures() {
  const s = view.stats;
  el.topViewers.textContent = count(view.viewers);
  el.topLikes.textContent = count(view.likes);
  el.stViewers.textContent = count(view.viewers);
  el.stLikes.textContent = count(view.likes);
  el.stPeak.textContent = s ? count(s.peak_viewers) : "–";
  el.stChats.textContent = s ? count(s.chats) : "–";
  el.stOrders.textContent = s ? count(s.orders) : "–";
  el.stUnits.textContent = s ? count(s.units_sold) : "–";
  el.stRevenue.textContent = s ? money.format(s.revenue) : "–";
  const skus = new Set([...view.products.keys(), ...Object.keys(s?.products ?? {})]);
  const rows = [...skus].map((sku) => {
    const f = s?.products?.[sku]
      ?? { peak_viewers: 0, likes: 0, chats: 0, orders: 0, units_sold: 0, revenue: 0 };
    const tr = document.createElement("tr");
    tr.dataset.sku = sku;
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = view.products.get(sku)?.title ?? sku;
    tr.append(th);
    const values = [
      count(f.peak_viewers), count(f.likes), count(f.chats),
      count(f.orders), count(f.units_sold), money.format(f.revenue),
    ];
    for (const value of values) {
      const td = document.createElement("td");
      td.textContent = s ? value : "–";
      tr.append(td);
    }
    return tr;
  });
  el.stProducts.replaceChildren(...rows);
  renderFiguresAge();
}

function renderFiguresAge() {
  // The server sends `stats` when a figure changed (at most once a second).
  el.figuresAge.textContent = !view.joined ? ""
    : client.state !== "live" ? "Paused while reconnecting"
    : view.stats ? "Live" : "Waiting for figures…";
}

/** Enable what the host may do now. */
function renderControls() {
  const live = client.state === "live" && view.joined;
  const status = view.status;
  el.goLive.hidden = status === "live" || status === "ended";
  el.goLive.disabled = !live || status !== "scheduled";
  el.endShow.disabled = !live || status === "ended" || !status;
  el.sfStart.disabled = !live || status !== "live" || view.products.size === 0;
  el.chatSend.disabled = !live || status !== "live";
  el.chatText.placeholder = status === "live" ? "Talk to your viewers…"
    : status === "ended" ? "The show has ended" : "Chat opens when you go live";
  el.broadcastStart.disabled = !view.joined || status === "ended" || !canHost(view.room, view.host);
  for (const pin of el.productList.querySelectorAll("button[data-action=pin]")) {
    /** @type {HTMLButtonElement} */ (pin).disabled = !live;
  }
}

/** The show's minute series and rates, from its report (the studio's staff token). */
async function loadReport() {
  if (!view.room || !view.joined) return;
  el.reportLink.href = `/report.html?room=${encodeURIComponent(view.room)}`;
  try {
    const rep = await session.api(`/api/rooms/${encodeURIComponent(view.room)}/report`);
    el.stChart.replaceChildren(minuteChart(rep.series));
    const r = rep.rates;
    el.stRates.textContent = `${count(rep.totals.unique_viewers)} unique viewers`
      + (r.conversion === null ? "" : `, ${(r.conversion * 100).toFixed(1)} % bought`);
  } catch {
    // the next look will tell (the figures card has the live counts meanwhile)
  }
}

/** Countdowns of the open sales, four times a second; figures' freshness. */
function tick() {
  const now = clock.now();
  for (const timer of el.saleList.querySelectorAll("[data-ends-at]")) {
    const left = Number(/** @type {HTMLElement} */ (timer).dataset.endsAt) - now;
    timer.textContent = left > 0 ? formatDuration(left) : "Ending…";
    /** @type {HTMLElement} */ (timer).dataset.urgent = String(left > 0 && left < 60_000);
  }
  tickGiveaway(now);
  tickAuction(now);
  renderFiguresAge();
}

// -- input ------------------------------------------------------------------------------------------

el.demoSignIn.addEventListener("click", async () => {
  el.demoSignIn.disabled = true;
  note(el.signInNote, "Signing in…", "info", 0);
  try {
    await session.demo("host");
    note(el.signInNote, "");
    await start();
  } catch (err) {
    note(el.signInNote, explain(err), "error", 0);
  } finally {
    el.demoSignIn.disabled = false;
  }
});

el.tokenForm.addEventListener("submit", async (e) => {
  e.preventDefault();
  const token = el.tokenInput.value.trim();
  if (!token) return;
  session.use(token);
  el.tokenInput.value = "";
  note(el.signInNote, "Signing in…", "info", 0);
  await start();
  if (view.user) note(el.signInNote, "");
});

el.signOut.addEventListener("click", () => {
  stopCamera();
  client.close();
  session.forget();
  view.user = null;
  view.room = null;
  el.me.textContent = "Not signed in";
  const url = new URL(location.href);
  url.searchParams.delete("room");
  history.replaceState(null, "", url);
  showConnection(el.conn, "idle");
  showGate("sign-in");
});

el.switchShow.addEventListener("click", closeShow);

el.createForm.addEventListener("submit", async (e) => {
  e.preventDefault();
  const title = el.createTitle.value.trim();
  const id = el.createId.value.trim();
  if (!title) return;
  try {
    const room = await session.api("/api/rooms", { method: "POST", body: id ? { title, id } : { title } });
    el.createTitle.value = "";
    el.createId.value = "";
    note(el.createNote, "");
    await openShow(room.id);
  } catch (err) {
    note(el.createNote, err?.code === "conflict" ? "That room id is taken: pick another." : explain(err), "error");
  }
});

el.cameraToggle.addEventListener("click", () => (stream ? stopCamera() : startCamera()));
el.broadcastStart.addEventListener("click", startBroadcast);
el.broadcastStop.addEventListener("click", () => stopBroadcast());
// Leaving the page ends the broadcast at once (the server would notice a dead
// connection only after a while).
window.addEventListener("pagehide", () => stopBroadcast({ keepalive: true }));
el.goLive.addEventListener("click", goLive);
el.endShow.addEventListener("click", endShow);

el.productNew.addEventListener("click", () => editProduct(null));
el.pfCancel.addEventListener("click", () => {
  el.productForm.hidden = true;
  view.editing = null;
});
el.productForm.addEventListener("submit", (e) => {
  e.preventDefault();
  saveProduct();
});

el.sfProduct.addEventListener("change", () => {
  view.priceTouched = false;
  suggestSalePrice();
});
el.sfPrice.addEventListener("input", () => { view.priceTouched = true; });
el.saleForm.addEventListener("submit", (e) => {
  e.preventDefault();
  startSale();
});
el.couponForm.addEventListener("submit", (e) => {
  e.preventDefault();
  dropCoupon();
});
el.auctionForm.addEventListener("submit", (e) => {
  e.preventDefault();
  startAuction();
});
el.dealForm.addEventListener("submit", (e) => {
  e.preventDefault();
  startDeal();
});
el.giveawayForm.addEventListener("submit", (e) => {
  e.preventDefault();
  startGiveaway();
});
el.gwDraw.addEventListener("click", () => endGiveaway("giveaway.draw"));
el.gwCancel.addEventListener("click", async () => {
  const ok = await confirmAction({
    title: "Cancel this giveaway?", text: "Entries close and nobody wins it.",
    confirm: "Cancel giveaway", danger: true,
  });
  if (ok) endGiveaway("giveaway.cancel");
});
el.cfKind.addEventListener("change", () => {
  el.cfUnit.textContent = el.cfKind.value === "percent" ? "%" : money.currency;
  el.cfValue.placeholder = el.cfKind.value === "percent" ? "15" : "3.00";
});

el.announceForm.addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = el.announceText.value.trim();
  if (!text) return;
  try {
    await client.send("announce", { room: view.room, text });
    el.announceText.value = "";
    note(el.announceNote, "Announced.", "ok", 3000);
  } catch (err) {
    note(el.announceNote, explain(err), "error");
  }
});

el.composer.addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = el.chatText.value.trim();
  if (!text || el.chatSend.disabled) return;
  el.chatText.value = "";
  try {
    await client.send("chat", { room: view.room, text });
    feed.follow();
  } catch (err) {
    if (!el.chatText.value) el.chatText.value = text;
    note(el.chatNote, explain(err), "error");
  }
});

setInterval(tick, 250);
setInterval(loadReport, 20_000);
setInterval(() => {
  // Ended sales leave the list after a minute.
  if ([...view.ended.values()].some((e) => Date.now() - e.at > ENDED_SALE_MS)) renderSales();
}, 5000);

// -- start ---------------------------------------------------------------------------------------------

cameraState("off", "Camera off");
renderBroadcast("off", {});
start();
