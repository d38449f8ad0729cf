/**
 * Page pieces shared by the viewer page (watch) and the staff pages (studio,
 * console): the connection banner, a confirmation dialog, short status notes, chat
 * lines and {@link ChatList}, a chat list that stays smooth in a busy room.
 *
 * @module ui
 */

/**
 * @param {string} id
 * @returns {HTMLElement}
 */
export function byId(id) {
  const found = document.getElementById(id);
  if (!found) throw new Error(`#${id} is missing`);
  return found;
}

/**
 * What the connection banner says once the connection is closed for good, by the
 * `reason` of the state detail; any other reason: "Disconnected. Reload to try again."
 * @type {ReadonlyMap<string, string>}
 */
export const CLOSED_TEXT = new Map([
  ["banned", "Banned from this server."],
  ["unauthorized", "The server refused the sign-in. Sign in again."],
]);

/**
 * Show the connection's state in the banner (`<p class="conn" role="status">`):
 * hidden while live, "Reconnecting…" with a spinner while the client resumes.
 * @param {HTMLElement} banner
 * @param {string} state a {@link import("./client.js").ConnectionState}
 * @param {{reason?: string}} [detail]
 * @param {ReadonlyMap<string, string>} [closedText] the page's own wording of
 *   {@link CLOSED_TEXT}
 */
export function showConnection(banner, state, detail = {}, closedText = CLOSED_TEXT) {
  banner.dataset.state = state;
  if (state === "live") banner.textContent = "Connected";
  else if (state === "reconnecting") banner.textContent = "Reconnecting…";
  else if (state === "connecting") banner.textContent = "Connecting…";
  else if (state === "idle") banner.textContent = "Not connected";
  else {
    const text = closedText.get(detail.reason ?? "");
    banner.textContent = text ?? "Disconnected. Reload to try again.";
  }
}

/**
 * Ask before doing something that cannot be undone, in a modal `<dialog>`.
 * @param {{title: string, text: string, confirm: string, danger?: boolean}} what
 * @returns {Promise<boolean>} true when confirmed
 */
export function confirmAction(what) {
  const dialog = document.createElement("dialog");
  dialog.className = "confirm";
  dialog.setAttribute("aria-labelledby", "confirm-title");
  dialog.setAttribute("aria-describedby", "confirm-text");
  const form = document.createElement("form");
  form.method = "dialog";
  const title = document.createElement("h2");
  title.id = "confirm-title";
  title.textContent = what.title;
  const text = document.createElement("p");
  text.id = "confirm-text";
  text.textContent = what.text;
  const row = document.createElement("div");
  row.className = "confirm-actions";
  const cancel = document.createElement("button");
  cancel.type = "submit";
  cancel.value = "cancel";
  cancel.className = "btn btn-quiet";
  cancel.textContent = "Cancel";
  const ok = document.createElement("button");
  ok.type = "submit";
  ok.value = "confirm";
  ok.className = what.danger ? "btn btn-danger" : "btn";
  ok.textContent = what.confirm;
  row.append(cancel, ok);
  form.append(title, text, row);
  dialog.append(form);
  document.body.append(dialog);
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "confirm");
      dialog.remove();
    });
    dialog.showModal();
    cancel.focus(); // the safe choice is the default
  });
}

/** @type {WeakMap<HTMLElement, number>} */
const noteTimers = new WeakMap();

/**
 * A short status line (`role="status"` element) that clears itself; its kind is
 * in `data-kind`, for the page's CSS.
 * @param {HTMLElement} target
 * @param {string} text
 * @param {"ok" | "error" | "info" | "pending"} [kind]
 * @param {number} [ms] how long it stays; 0 keeps it
 */
export function note(target, text, kind = "info", ms = 6000) {
  target.textContent = text;
  target.dataset.kind = kind;
  clearTimeout(noteTimers.get(target));
  if (text && ms > 0) {
    noteTimers.set(target, window.setTimeout(() => { target.textContent = ""; }, ms));
  }
}

/**
 * Keep a room's live coupons (by id) in step with a `coupon.*` event.
 * @param {Map<string, any>} coupons
 * @param {any} ev a `coupon.dropped`, `coupon.stock` or `coupon.ended` event
 * @returns {boolean} whether `ev` was one (and `coupons` may have changed)
 */
export function applyCouponEvent(coupons, ev) {
  switch (ev.type) {
    case "coupon.dropped":
      coupons.set(ev.coupon.id, ev.coupon);
      return true;
    case "coupon.stock": {
      const coupon = coupons.get(ev.coupon_id);
      if (coupon) coupon.remaining = ev.remaining;
      return true;
    }
    case "coupon.ended":
      coupons.delete(ev.coupon_id);
      return true;
    default:
      return false;
  }
}

/**
 * The room's giveaway after a `giveaway.*` event (`current`: the one known before).
 * @param {any} current the giveaway object, or null
 * @param {any} ev an event
 * @returns {any} the giveaway now (drawn or cancelled ones kept, with their status)
 */
export function applyGiveawayEvent(current, ev) {
  switch (ev.type) {
    case "giveaway.started":
    case "giveaway.drawn":
      return ev.giveaway;
    case "giveaway.entries":
      return current?.id === ev.giveaway_id ? { ...current, entries: ev.entries } : current;
    case "giveaway.cancelled":
      return current?.id === ev.giveaway_id ? { ...current, status: "cancelled" } : current;
    default:
      return current;
  }
}

/** @param {ArrayBuffer} buf @returns {string} */
const hex = (buf) => [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, "0")).join("");

/**
 * Check a giveaway's proof in the browser, as `livecommerce verify-draw` does
 * (docs/giveaways.md): the seed against the commitment announced at the start, the
 * entrants against their digest, the winners against both.
 * @param {any} proof the `GET /api/giveaways/{id}/proof` document
 * @param {string} commitment the commitment of `giveaway.started`
 * @returns {Promise<string[]>} what fails (empty: the draw checks out)
 */
export async function verifyDraw(proof, commitment) {
  const problems = [];
  const enc = new TextEncoder();
  const seed = new Uint8Array((proof.seed.match(/../g) ?? []).map((h) => parseInt(h, 16)));
  if (commitment !== proof.commitment) problems.push("not the commitment announced at the start");
  if (hex(await crypto.subtle.digest("SHA-256", seed)) !== proof.commitment) {
    problems.push("the seed does not match its commitment");
  }
  const cmp = (/** @type {string} */ a, /** @type {string} */ b) => (a < b ? -1 : a > b ? 1 : 0);
  const sorted = [...new Set(proof.entrants)].sort(cmp);
  const text = enc.encode(sorted.join("\n"));
  if (hex(await crypto.subtle.digest("SHA-256", text)) !== proof.entrants_digest) {
    problems.push("the entrants do not match their digest");
  }
  const key = await crypto.subtle.importKey("raw", seed, { name: "HMAC", hash: "SHA-256" },
    false, ["sign"]);
  const tickets = await Promise.all(sorted.map(async (e) =>
    [hex(await crypto.subtle.sign("HMAC", key, enc.encode(e))), e]));
  tickets.sort((a, b) => cmp(a[0], b[0]) || cmp(a[1], b[1]));
  const winners = tickets.slice(0, proof.count).map((t) => t[1]);
  if (winners.join("\n") !== proof.winners.join("\n")) {
    problems.push("the winners do not follow from the seed and the entrants");
  }
  return problems;
}

/**
 * The author's name and the text of a chat message, both set as text (never parsed
 * as HTML): `<span class="msg-user">`, a space, `<span class="msg-text">`.
 * @param {{user: {name: string}, text: string}} ev a `chat` event
 * @returns {(HTMLElement | string)[]} to append to the message's element
 */
export function messageParts(ev) {
  const who = document.createElement("span");
  who.className = "msg-user";
  who.textContent = ev.user.name;
  const text = document.createElement("span");
  text.className = "msg-text";
  text.textContent = ev.text;
  return [who, " ", text];
}

/**
 * One chat line, `<li class="msg" data-msg-id>`, for {@link ChatList}'s `render`.
 * @param {{msg_id: string, user: {name: string}, text: string}} ev a `chat` event
 * @param {boolean} mine the reader wrote it (class `mine`)
 * @returns {HTMLElement}
 */
export function messageNode(ev, mine) {
  const li = document.createElement("li");
  li.className = "msg";
  li.dataset.msgId = ev.msg_id;
  if (mine) li.classList.add("mine");
  li.append(...messageParts(ev));
  return li;
}

/**
 * What a {@link ChatList} did, for tests and the curious: chat events received,
 * messages rendered, events skipped (dropped from the queue unrendered, as more
 * than `max` arrived), messages deleted, and frames flushed.
 * @typedef {{received: number, rendered: number, skipped: number, deleted: number,
 *   frames: number}} ChatStats
 */

/**
 * A chat list built to stay smooth in a busy room:
 *
 * - incoming messages wait in a queue and are put on the page once per animation
 *   frame, in one DocumentFragment (many messages, one layout);
 * - at most `max` messages stay in the DOM; older ones are removed, and a frame
 *   that brings more than `max` only renders the newest `max`;
 * - while the reader has scrolled up, new messages are held back (at most `max`
 *   of them) and the "new messages" button offers to jump back down, so the text
 *   being read neither moves nor gets trimmed away;
 * - deleted messages vanish wherever they are (on screen or still queued).
 */
export class ChatList {
  /**
   * @param {HTMLElement} list the `<ol>` that scrolls
   * @param {HTMLElement} jump the "new messages" button
   * @param {{max: number, render: (ev: any) => HTMLElement, stats?: ChatStats}} options
   *   `render` builds one message's element (it must set `data-msg-id`, as
   *   {@link messageNode} does); `stats` is where to count (by default a new object).
   */
  constructor(list, jump, options) {
    this.list = list;
    this.jump = jump;
    this.max = options.max;
    this.render = options.render;
    /** @type {ChatStats} */
    this.stats = options.stats ?? { received: 0, rendered: 0, skipped: 0, deleted: 0, frames: 0 };
    /** @type {any[]} chat events not rendered yet */
    this.queue = [];
    /** @type {Map<string, HTMLElement>} msg_id -> its element */
    this.nodes = new Map();
    /** The reader is at the bottom: new messages scroll into view. */
    this.following = true;
    this._frame = 0;
    list.addEventListener("scroll", () => this._onScroll(), { passive: true });
    jump.addEventListener("click", () => this.follow());
  }

  /** @param {any} ev a `chat` event */
  push(ev) {
    this.stats.received += 1;
    this.queue.push(ev);
    if (this.queue.length > this.max * 2) this._dropOldQueued();
    this._schedule();
  }

  /** @param {string} msgId @returns {HTMLElement | undefined} its element, if shown */
  node(msgId) {
    return this.nodes.get(msgId);
  }

  /** Remove a message, rendered or queued. @param {string} msgId */
  remove(msgId) {
    const node = this.nodes.get(msgId);
    if (node) {
      node.remove();
      this.nodes.delete(msgId);
      this.stats.deleted += 1;
      return;
    }
    const at = this.queue.findIndex((ev) => ev.msg_id === msgId);
    if (at >= 0) {
      this.queue.splice(at, 1);
      this.stats.deleted += 1;
      this._updateJump();
    }
  }

  /** Replace everything with `events` (a snapshot's `recent`). @param {any[]} events */
  reset(events) {
    this.list.replaceChildren();
    this.nodes.clear();
    this.queue = [];
    for (const ev of events) this.push(ev);
    this.follow();
  }

  /** Jump to the newest messages and keep following them. */
  follow() {
    this.following = true;
    this._schedule();
  }

  /** Keep the newest `max` queued events; count the others as skipped. */
  _dropOldQueued() {
    const drop = this.queue.length - this.max;
    this.stats.skipped += drop;
    this.queue.splice(0, drop);
  }

  _schedule() {
    if (!this._frame) this._frame = requestAnimationFrame(() => this._flush());
  }

  _flush() {
    this._frame = 0;
    this.stats.frames += 1;
    // At most `max` wait: to be rendered now, or held back while the reader is up the list.
    if (this.queue.length > this.max) this._dropOldQueued();
    if (!this.following) {
      this._updateJump();
      return;
    }
    if (this.queue.length) {
      const fragment = document.createDocumentFragment();
      for (const ev of this.queue) {
        if (this.nodes.has(ev.msg_id)) continue; // already shown (a replay)
        const node = this.render(ev);
        this.nodes.set(ev.msg_id, node);
        fragment.append(node);
        this.stats.rendered += 1;
      }
      this.queue = [];
      this.list.append(fragment);
      let extra = this.list.childElementCount - this.max;
      while (extra-- > 0) {
        const first = /** @type {HTMLElement} */ (this.list.firstElementChild);
        this.nodes.delete(first.dataset.msgId ?? "");
        first.remove();
      }
    }
    // Only scroll when the list is on screen (a hidden tab has no layout to scroll).
    if (this.list.clientHeight) this.list.scrollTop = this.list.scrollHeight;
    this._updateJump();
  }

  /**
   * Scroll events are dispatched before animation-frame callbacks, so the position
   * seen here is the one the last flush left (the bottom) or the reader's own.
   */
  _onScroll() {
    const l = this.list;
    const atBottom = l.scrollHeight - l.scrollTop - l.clientHeight < 24;
    if (atBottom && !this.following) this.follow();
    else if (!atBottom) this.following = false;
    this._updateJump();
  }

  _updateJump() {
    const waiting = this.following ? 0 : this.queue.length;
    this.jump.hidden = this.following;
    this.jump.textContent = waiting
      ? `${waiting >= this.max ? `${this.max}+` : waiting} new message${waiting === 1 ? "" : "s"} ↓`
      : "Back to the newest ↓";
  }
}

const SVG = "http://www.w3.org/2000/svg";

/**
 * A small chart of a show, minute by minute: viewers (a line) and orders (bars), each
 * on its own scale. Text-free shapes; the caption and a table say the figures.
 * @param {{minute: number, viewers: number, orders: number}[]} series
 * @param {{width?: number, height?: number}} [size]
 * @returns {SVGSVGElement}
 */
export function minuteChart(series, { width = 320, height = 96 } = {}) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("class", "minute-chart");
  svg.setAttribute("role", "img");
  const last = series.at(-1);
  svg.setAttribute("aria-label", series.length
    ? `${series.length} minutes; last minute: ${last?.viewers} viewers, ${last?.orders} orders`
    : "No full minute yet");
  if (!series.length) return svg;
  const step = width / series.length;
  const most = (/** @type {"viewers" | "orders"} */ k) => Math.max(1, ...series.map((p) => p[k]));
  const [viewersTop, ordersTop] = [most("viewers"), most("orders")];
  series.forEach((p, i) => {
    const h = (p.orders / ordersTop) * (height - 4);
    const bar = document.createElementNS(SVG, "rect");
    bar.setAttribute("class", "chart-orders");
    bar.setAttribute("x", String(i * step + step * 0.2));
    bar.setAttribute("y", String(height - h));
    bar.setAttribute("width", String(step * 0.6));
    bar.setAttribute("height", String(h));
    svg.append(bar);
  });
  const line = document.createElementNS(SVG, "polyline");
  line.setAttribute("class", "chart-viewers");
  line.setAttribute("fill", "none");
  line.setAttribute("points", series.map((p, i) =>
    `${(i + 0.5) * step},${height - 2 - (p.viewers / viewersTop) * (height - 6)}`).join(" "));
  svg.append(line);
  return svg;
}

/**
 * Fetch ``path`` with a bearer token and save the answer as a file named ``name``.
 * @param {string} path
 * @param {string | null} token
 * @param {string} name
 * @returns {Promise<number>} the answer's HTTP status (the file is saved on 2xx only)
 */
export async function download(path, token, name) {
  const res = await fetch(path, { headers: token ? { Authorization: `Bearer ${token}` } : {} });
  if (!res.ok) return res.status;
  const url = URL.createObjectURL(await res.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  a.click();
  URL.revokeObjectURL(url);
  return res.status;
}
