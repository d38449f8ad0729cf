/**
 * The moderator console, `/console.html?rooms=<id>,<id>`: moderate several live
 * rooms at once on one connection.
 *
 * Per room (a tab): the live chat with delete, mute (1 min to 24 h), ban and unban
 * per message author; slow mode; the word filter (block, mask, flag); the queue of
 * flagged messages to approve or delete; the pinned announcement; and the
 * moderation log (`GET /api/rooms/{room}/modlog`, then live `mod.logged` events).
 * See docs/protocol.md, "Additions to protocol v1", for the staff events.
 *
 * One {@link LiveClient} joins every open room and resumes them after a
 * reconnect; the banner says "Reconnecting…" meanwhile.
 *
 * Query parameters: `rooms` (comma-separated room ids to open), `max_messages`
 * (chat messages kept per room, default 300).
 *
 * For tests and debugging, `window.__live` exposes `{client, panels}`; the page
 * never reads it.
 *
 * @module console
 */

import { LiveClient } from "/js/client.js";
import { clock, count, formatSeconds, timeOfDay } from "/js/format.js";
import { explain, Session } from "/js/session.js";
import { byId, ChatList, download, messageParts, note, showConnection } from "/js/ui.js";

// -- configuration ---------------------------------------------------------------

const params = new URLSearchParams(location.search);
const MAX_MESSAGES = Math.max(20, Number.parseInt(params.get("max_messages") ?? "", 10) || 300);
/** Log entries kept per room. */
const MAX_LOG = 200;
/** Messages remembered per room to name the author of a logged action. */
const MAX_KNOWN = 2000;
const SLOW_CHOICES = [0, 5, 10, 30, 60, 300];
const ROOM_ID = /^[a-z0-9][a-z0-9_-]{0,63}$/;

const session = new Session("livecommerce.console.token");

// -- DOM -------------------------------------------------------------------------

const el = {
  me: byId("me"), signOut: byId("sign-out"), conn: byId("conn"),
  gateSignIn: byId("gate-sign-in"),
  demoSignIn: /** @type {HTMLButtonElement} */ (byId("demo-sign-in")),
  demoSignInAdmin: /** @type {HTMLButtonElement} */ (byId("demo-sign-in-admin")),
  tokenForm: byId("token-form"), tokenInput: /** @type {HTMLInputElement} */ (byId("token-input")),
  signInNote: byId("sign-in-note"), console: byId("console"), tabs: byId("tabs"),
  addRoom: byId("add-room"), picker: byId("picker"), pickerRefresh: byId("picker-refresh"),
  roomList: byId("room-list"), pickerNote: byId("picker-note"), noRooms: byId("no-rooms"),
  panels: byId("panels"), template: /** @type {HTMLTemplateElement} */ (byId("room-template")),
  userDialog: /** @type {HTMLDialogElement} */ (byId("user-dialog")),
  udTitle: byId("ud-title"), udUser: byId("ud-user"), udText: byId("ud-text"),
};

// -- state -----------------------------------------------------------------------

/** @type {{id: string, name: string, role: string} | null} */
let me = null;
/** @type {Map<string, RoomPanel>} open rooms, in tab order */
const panels = new Map();
/** @type {string | null} the room whose tab is selected */
let active = null;
/** @type {any[]} the last list of rooms from the server */
let knownRooms = [];

/** May the signed-in user moderate `room` (as the server decides it)? */
function canModerate(room, host) {
  if (!me) return false;
  if (me.role === "admin") return true;
  if (me.role === "host" && host === me.id) return true;
  return ["moderator", "host"].includes(me.role) && (session.claims?.rooms ?? []).includes(room);
}

// -- one room --------------------------------------------------------------------

/** The panel of one open room: its chat, tools and log. */
class RoomPanel {
  /** @param {string} room */
  constructor(room) {
    this.room = room;
    this.title = room;
    this.status = "";
    this.host = "";
    this.viewers = 0;
    this.slow = 0;
    this.joined = false;
    this.moderator = false;
    /** @type {Map<string, any>} msg_id -> chat.flagged entry, oldest first */
    this.flagged = new Map();
    /** @type {{text: string, action: string}[]} */
    this.terms = [];
    /** @type {any[]} the moderation log, oldest first */
    this.log = [];
    /** @type {Map<string, {user: {id: string, name: string}, text: string}>} */
    this.known = new Map();
    /** @type {Map<string, string>} user id -> name */
    this.names = new Map();

    const prefix = `room-${room}`;
    const root = /** @type {HTMLElement} */ (
      /** @type {DocumentFragment} */ (el.template.content.cloneNode(true)).firstElementChild
    );
    root.id = prefix;
    root.dataset.room = room;
    for (const node of root.querySelectorAll("[data-id]")) {
      node.id = `${prefix}-${/** @type {HTMLElement} */ (node).dataset.id}`;
    }
    for (const label of root.querySelectorAll("label[data-for]")) {
      /** @type {HTMLLabelElement} */ (label).htmlFor = `${prefix}-${/** @type {HTMLElement} */ (label).dataset.for}`;
    }
    this.root = root;
    /** @param {string} name @returns {any} */
    const part = (name) => root.querySelector(`[data-role="${name}"]`);
    this.el = {
      status: part("status"), title: part("title"), figures: part("figures"),
      watchLink: part("watch-link"), close: part("close"), rights: part("rights"),
      note: part("note"), slowTag: part("slow-tag"), feed: part("feed"), jump: part("jump"),
      tools: part("tools"), flagCount: part("flag-count"), flagList: part("flag-list"),
      noFlags: part("no-flags"), slowText: part("slow-text"), slowButtons: part("slow-buttons"),
      terms: part("terms"), noTerms: part("no-terms"), termForm: part("term-form"),
      termText: root.querySelector(`#${prefix}-term`),
      termAction: root.querySelector(`#${prefix}-term-action`),
      announcement: part("announcement"), announceForm: part("announce-form"),
      announceText: root.querySelector(`#${prefix}-announce`),
      log: part("log"), noLog: part("no-log"),
      exportCsv: part("export-csv"), exportJson: part("export-json"),
    };
    this.el.watchLink.href = `/watch.html?room=${encodeURIComponent(room)}`;
    this.feed = new ChatList(this.el.feed, this.el.jump, {
      max: MAX_MESSAGES,
      render: (ev) => this.messageNode(ev),
    });

    // The tab.
    const tab = document.createElement("button");
    tab.type = "button";
    tab.className = "tab";
    tab.id = `tab-${room}`;
    tab.setAttribute("role", "tab");
    tab.setAttribute("aria-controls", prefix);
    tab.dataset.room = room;
    this.tabTitle = document.createElement("span");
    this.tabTitle.className = "tab-title";
    this.tabTitle.textContent = room;
    this.tabBadge = document.createElement("span");
    this.tabBadge.className = "tab-badge";
    this.tabBadge.hidden = true;
    tab.append(this.tabTitle, this.tabBadge);
    this.tab = tab;
    root.setAttribute("aria-labelledby", tab.id);

    for (const seconds of SLOW_CHOICES) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "seg";
      b.dataset.seconds = String(seconds);
      b.textContent = seconds ? formatSeconds(seconds) : "Off";
      b.setAttribute("aria-pressed", "false");
      b.addEventListener("click", () => this.setSlow(seconds));
      this.el.slowButtons.append(b);
    }
    this.el.close.addEventListener("click", () => closeRoom(room));
    this.el.feed.addEventListener("click", (e) => this.onFeedClick(e));
    this.el.flagList.addEventListener("click", (e) => this.onFlagClick(e));
    this.el.terms.addEventListener("click", (e) => this.onTermClick(e));
    this.el.log.addEventListener("click", (e) => this.onLogClick(e));
    this.el.exportCsv.addEventListener("click", () => this.exportChat("csv"));
    this.el.exportJson.addEventListener("click", () => this.exportChat("json"));
    this.el.termForm.addEventListener("submit", (e) => {
      e.preventDefault();
      this.addTerm();
    });
    this.el.announceForm.addEventListener("submit", (e) => {
      e.preventDefault();
      this.announce();
    });
    this.render();
  }

  // -- server events ---------------------------------------------------------------

  /** @param {any} snapshot @param {boolean} recovered */
  onJoin(snapshot, recovered) {
    this.joined = true;
    this.title = snapshot.title;
    this.status = snapshot.status;
    this.host = snapshot.host;
    this.viewers = snapshot.viewers;
    this.slow = snapshot.slow ?? 0;
    this.moderator = canModerate(this.room, this.host);
    for (const ev of snapshot.recent ?? []) this.remember(ev);
    if (!recovered) this.feed.reset(snapshot.recent ?? []);
    // Staff-only parts are not in the room's history: always from the snapshot.
    this.flagged = new Map();
    for (const entry of snapshot.flagged ?? []) {
      this.flagged.set(entry.msg_id, entry);
      this.remember(entry);
    }
    if (Array.isArray(snapshot.filter)) this.terms = snapshot.filter;
    this.showAnnouncement(snapshot.announcement);
    this.render();
    this.renderFlagged();
    this.renderTerms();
    if (this.moderator) {
      this.loadLog();
      if (!Array.isArray(snapshot.filter)) this.readFilter();
    }
  }

  /** @param {any} ev */
  onEvent(ev) {
    switch (ev.type) {
      case "chat":
        this.remember(ev);
        this.feed.push(ev);
        break;
      case "chat.deleted":
        this.feed.remove(ev.msg_id);
        if (this.flagged.delete(ev.msg_id)) this.renderFlagged();
        break;
      case "chat.flagged":
        this.remember(ev);
        this.flagged.set(ev.msg_id, ev);
        this.renderFlagged();
        this.feed.node(ev.msg_id)?.classList.add("flagged");
        break;
      case "report.raised":
        this.remember(ev);
        this.flagged.set(ev.msg_id, ev);
        this.renderFlagged();
        this.feed.node(ev.msg_id)?.classList.add("flagged");
        break;
      case "report.counted": {
        const entry = this.flagged.get(ev.msg_id);
        if (entry) {
          entry.report = ev.report;
          this.renderFlagged();
        }
        break;
      }
      case "chat.reviewed":
        if (this.flagged.delete(ev.msg_id)) this.renderFlagged();
        this.feed.node(ev.msg_id)?.classList.remove("flagged");
        break;
      case "mod.logged":
        this.addLog([ev.entry]);
        if (ev.entry?.action === "filter" && ev.entry.by?.id !== me?.id) this.readFilter();
        break;
      case "announcement":
        this.showAnnouncement(ev);
        break;
      case "presence":
        this.viewers = ev.viewers;
        this.render();
        break;
      case "stats":
        this.viewers = ev.viewers;
        this.stats = ev;
        this.render();
        break;
      case "room.slow":
        this.slow = ev.seconds;
        this.render();
        break;
      case "room.started":
        this.status = "live";
        this.render();
        break;
      case "room.ended":
        this.status = "ended";
        this.render();
        break;
      default:
        break; // the server may add event types; ignore what we don't know
    }
  }

  /** Keep a message's author and text, to name them in the log. @param {any} ev */
  remember(ev) {
    if (!ev?.msg_id || !ev.user) return;
    this.known.set(ev.msg_id, { user: ev.user, text: ev.text });
    this.names.set(ev.user.id, ev.user.name);
    if (this.known.size > MAX_KNOWN) {
      this.known.delete(/** @type {string} */ (this.known.keys().next().value));
    }
  }

  // -- commands -----------------------------------------------------------------------

  /**
   * Send a moderation command for this room and report the outcome in the room's
   * status line.
   * @param {string} op
   * @param {object} fields
   * @param {string} [done] what to say when it worked
   * @returns {Promise<any>} the reply data, or undefined when refused
   */
  async command(op, fields, done) {
    try {
      const data = await client.send(op, { room: this.room, ...fields });
      if (done) note(this.el.note, done, "ok", 4000);
      return data;
    } catch (err) {
      note(this.el.note, err?.code === "not_found" && op === "mod.delete"
        ? "That message is gone already." : explain(err), "error");
      return undefined;
    }
  }

  /** @param {number} seconds */
  setSlow(seconds) {
    this.command("mod.slow", { seconds },
      seconds ? `Slow mode: one message per ${formatSeconds(seconds)}.` : "Slow mode is off.");
  }

  async readFilter() {
    const data = await this.command("mod.filter", {});
    if (data?.terms) {
      this.terms = data.terms;
      this.renderTerms();
    }
  }

  async addTerm() {
    const text = this.el.termText.value.trim();
    if (!text) return;
    const action = this.el.termAction.value;
    const data = await this.command("mod.filter", { add: [text], action },
      `“${text}” added (${ACTION_LABELS[action] ?? action}).`);
    if (data?.terms) {
      this.terms = data.terms;
      this.el.termText.value = "";
      this.renderTerms();
    }
  }

  /** @param {string} text */
  async removeTerm(text) {
    const data = await this.command("mod.filter", { remove: [text] }, `“${text}” removed.`);
    if (data?.terms) {
      this.terms = data.terms;
      this.renderTerms();
      this.el.termText.focus();
    }
  }

  async announce() {
    const text = this.el.announceText.value.trim();
    if (!text) return;
    const data = await this.command("announce", { text }, "Announcement pinned.");
    if (data) this.el.announceText.value = "";
  }

  /**
   * What the user dialog chose for a message's author.
   * @param {string} choice `delete`, `mute:<seconds>`, `ban` or `unban`
   * @param {{msgId: string | null, user: {id: string, name: string}}} target
   */
  act(choice, target) {
    const { user, msgId } = target;
    if (choice === "delete" && msgId) {
      this.command("mod.delete", { msg_id: msgId }, "Message deleted.");
    } else if (choice.startsWith("mute:")) {
      const seconds = Number(choice.slice(5));
      this.command("mod.mute", { user: user.id, seconds },
        seconds <= 1 ? `${user.name} may chat again.` : `${user.name} is muted for ${formatSeconds(seconds)}.`);
    } else if (choice === "ban") {
      this.command("mod.ban", { user: user.id }, `${user.name} is banned from the room.`);
    } else if (choice === "unban") {
      this.command("mod.unban", { user: user.id }, `${user.name} is unbanned.`);
    }
  }

  // -- clicks -----------------------------------------------------------------------------

  /** @param {Event} e */
  onFeedClick(e) {
    const button = /** @type {HTMLElement} */ (e.target).closest("button[data-act]");
    const li = button?.closest("[data-msg-id]");
    if (!button || !(li instanceof HTMLElement)) return;
    const msgId = li.dataset.msgId ?? "";
    const known = this.known.get(msgId);
    if (!known) return;
    if (/** @type {HTMLElement} */ (button).dataset.act === "delete") {
      this.command("mod.delete", { msg_id: msgId }, "Message deleted.");
    } else {
      openUserDialog(this, { msgId, user: known.user, text: known.text });
    }
  }

  /** @param {Event} e */
  onFlagClick(e) {
    const button = /** @type {HTMLElement} */ (e.target).closest("button[data-act]");
    const li = button?.closest("[data-msg-id]");
    if (!button || !(li instanceof HTMLElement)) return;
    const msgId = li.dataset.msgId ?? "";
    /** @type {HTMLButtonElement} */ (button).disabled = true;
    const act = /** @type {HTMLElement} */ (button).dataset.act;
    const sent = act === "approve"
      ? this.command("mod.approve", { msg_id: msgId },
        msgId === SHOW ? "Dismissed." : "Approved: the message stays.")
      : this.command("mod.delete", { msg_id: msgId }, "Message deleted.");
    sent.then((data) => {
      if (data === undefined) /** @type {HTMLButtonElement} */ (button).disabled = false;
    });
  }

  /** @param {Event} e */
  onTermClick(e) {
    const button = /** @type {HTMLElement} */ (e.target).closest("button[data-term]");
    if (button instanceof HTMLElement) this.removeTerm(button.dataset.term ?? "");
  }

  /** @param {Event} e */
  onLogClick(e) {
    const button = /** @type {HTMLElement} */ (e.target).closest("button[data-unban]");
    if (!(button instanceof HTMLElement)) return;
    const id = button.dataset.unban ?? "";
    this.act("unban", { msgId: null, user: { id, name: this.names.get(id) ?? id } });
  }

  // -- the log ---------------------------------------------------------------------------------

  /** Download the room's chat with its moderation (the staff's export). @param {string} fmt */
  async exportChat(fmt) {
    const path = `/api/rooms/${encodeURIComponent(this.room)}/chat?format=${fmt}`;
    const status = await download(path, session.token, `${this.room}-chat.${fmt}`);
    if (status >= 300) note(this.el.note, `The export failed (${status}).`, "error");
  }

  async loadLog() {
    const room = this.room;
    try {
      const { entries } = await session.api(`/api/rooms/${encodeURIComponent(room)}/modlog?limit=${MAX_LOG}`);
      if (panels.get(room) !== this) return;
      // Entries logged live while the request was on its way are in `entries` too.
      this.log = [];
      this.addLog(entries);
    } catch (err) {
      note(this.el.note, `The moderation log could not be loaded: ${explain(err)}`, "error");
    }
  }

  /** @param {any[]} entries new entries, oldest first */
  addLog(entries) {
    const seen = new Set(this.log.map(logKey));
    for (const entry of entries) {
      if (entry && !seen.has(logKey(entry))) {
        this.log.push(entry);
        seen.add(logKey(entry));
      }
    }
    if (this.log.length > MAX_LOG) this.log.splice(0, this.log.length - MAX_LOG);
    this.renderLog();
  }

  renderLog() {
    // Who is banned now, by the log: the Unban button goes on the latest ban.
    /** @type {Map<string, any>} */
    const lastBan = new Map();
    for (const entry of this.log) {
      if (entry.action === "ban") lastBan.set(entry.target, entry);
      if (entry.action === "unban") lastBan.delete(entry.target);
    }
    const items = this.log.map((entry) => {
      const li = document.createElement("li");
      li.className = "log-entry";
      li.dataset.action = entry.action;
      const time = document.createElement("time");
      time.dateTime = new Date(entry.at).toISOString();
      time.textContent = timeOfDay(entry.at);
      const who = document.createElement("strong");
      who.textContent = entry.by?.name ?? entry.by?.id ?? "?";
      const what = document.createElement("span");
      what.className = "log-what";
      what.append(...this.describe(entry));
      li.append(time, " ", who, " ", what);
      if (lastBan.get(entry.target) === entry && this.moderator) {
        const unban = document.createElement("button");
        unban.type = "button";
        unban.className = "btn btn-small btn-quiet";
        unban.dataset.unban = entry.target;
        unban.textContent = "Unban";
        unban.setAttribute("aria-label", `Unban ${this.names.get(entry.target) ?? entry.target}`);
        li.append(" ", unban);
      }
      return li;
    });
    items.reverse(); // newest first
    this.el.log.replaceChildren(...items);
    this.el.noLog.hidden = items.length > 0;
  }

  /**
   * An entry in words: "muted Bo for 10 min", "deleted a message by Bo: “…”".
   * @param {any} entry
   * @returns {(string | Node)[]}
   */
  describe(entry) {
    const d = entry.details ?? {};
    const person = (id) => strong(this.names.get(id) ?? id ?? "someone");
    const message = (msgId) => {
      const known = this.known.get(msgId);
      return known
        ? ["a message by ", strong(known.user.name), `: “${clip(known.text)}”`]
        : [`message ${msgId}`];
    };
    switch (entry.action) {
      case "delete": return ["deleted ", ...message(entry.target)];
      case "approve": return ["approved ", ...message(entry.target)];
      case "mute":
        return d.seconds <= 1
          ? ["lifted the mute of ", person(entry.target)]
          : ["muted ", person(entry.target), ` for ${formatSeconds(d.seconds)}`];
      case "ban": return ["banned ", person(entry.target)];
      case "unban": return ["unbanned ", person(entry.target)];
      case "slow":
        return [d.seconds ? `set slow mode to ${formatSeconds(d.seconds)}` : "turned slow mode off"];
      case "filter": {
        const parts = [];
        if (d.add?.length) parts.push(`added ${quoteList(d.add)} (${ACTION_LABELS[d.action] ?? d.action})`);
        if (d.remove?.length) parts.push(`removed ${quoteList(d.remove)}`);
        return [`${parts.join(" and ") || "changed"} in the word filter`];
      }
      case "announce": return [`announced “${clip(d.text ?? "")}”`];
      case "coupon.drop": {
        const off = d.kind === "percent" ? `${d.value}%` : (d.value / 100).toFixed(2);
        return [`dropped a coupon: ${off} off, ${d.quantity} of them`];
      }
      case "coupon.stop": return [`stopped the coupon ${entry.target}`];
      case "giveaway.start": {
        const how = d.entry === "keyword" ? `comment “${d.keyword}”` : "press Enter";
        return [`started a giveaway of ${d.prize} for ${d.count} (${how})`];
      }
      case "giveaway.draw": {
        const won = d.winners?.length ? d.winners.join(", ") : "nobody still watching";
        return [`drew the giveaway ${entry.target}: ${won}`];
      }
      case "giveaway.cancel": return [`cancelled the giveaway ${entry.target}`];
      case "deal.start": {
        const price = (d.price / 100).toFixed(2);
        return [`started a group buy of ${d.title}: ${price} in groups of ${d.size}`];
      }
      case "deal.stop": return [`stopped the group buy ${entry.target}`];
      case "auction.start": {
        const clock = d.extend_s ? `late bids add ${d.extend_s} s` : "sudden death";
        return [`started an auction of ${d.title} from ${(d.start_bid / 100).toFixed(2)} for `
          + `${Math.round((d.ends_at - d.starts_at) / 1000)} s (${clock})`];
      }
      default:
        return [`${entry.action}${entry.target ? ` ${entry.target}` : ""}`];
    }
  }

  // -- rendering ----------------------------------------------------------------------------------

  render() {
    const labels = { live: "LIVE", scheduled: "Not live", ended: "Ended" };
    this.el.status.textContent = labels[this.status] ?? "…";
    this.el.status.dataset.status = this.status;
    this.el.title.textContent = this.title;
    this.tabTitle.textContent = this.title;
    const figures = [`${count(this.viewers)} watching`];
    if (this.stats) figures.push(`${count(this.stats.chats)} chats`);
    this.el.figures.textContent = figures.join(" · ");
    this.el.rights.hidden = !this.joined || this.moderator;
    this.el.tools.hidden = this.joined && !this.moderator;
    this.root.dataset.moderator = String(this.moderator);
    this.el.slowTag.hidden = !this.slow;
    this.el.slowTag.textContent = this.slow ? `Slow mode ${formatSeconds(this.slow)}` : "";
    this.el.slowText.textContent = this.slow
      ? `One message per ${formatSeconds(this.slow)} per person` : "Off";
    for (const b of this.el.slowButtons.children) {
      b.setAttribute("aria-pressed", String(Number(b.dataset.seconds) === this.slow));
      b.disabled = !this.moderator;
    }
  }

  renderFlagged() {
    const entries = [...this.flagged.values()];
    this.el.flagList.replaceChildren(...entries.map((entry) => flagNode(entry)));
    this.el.noFlags.hidden = entries.length > 0;
    this.el.flagCount.textContent = String(entries.length);
    this.el.flagCount.dataset.count = String(entries.length);
    this.tabBadge.hidden = entries.length === 0;
    this.tabBadge.textContent = entries.length ? String(entries.length) : "";
    this.tabBadge.setAttribute("aria-label", `${entries.length} flagged`);
    for (const msgId of this.flagged.keys()) this.feed.node(msgId)?.classList.add("flagged");
  }

  renderTerms() {
    this.el.terms.replaceChildren(...this.terms.map((term) => {
      const li = document.createElement("li");
      li.className = "term";
      li.dataset.term = term.text;
      const text = document.createElement("span");
      text.className = "term-text";
      text.textContent = term.text;
      const tag = document.createElement("span");
      tag.className = "tag term-action";
      tag.dataset.action = term.action;
      tag.textContent = ACTION_LABELS[term.action] ?? term.action;
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "btn btn-small btn-quiet";
      remove.dataset.term = term.text;
      remove.textContent = "Remove";
      remove.setAttribute("aria-label", `Remove “${term.text}” from the filter`);
      li.append(text, tag, remove);
      return li;
    }));
    this.el.noTerms.hidden = this.terms.length > 0;
  }

  /** @param {{text: string} | null} ev */
  showAnnouncement(ev) {
    this.el.announcement.hidden = !ev;
    this.el.announcement.textContent = ev ? ev.text : "";
  }

  /**
   * One chat line with its moderation buttons. Text is always set as text.
   * @param {{msg_id: string, ts?: number, user: {id: string, name: string}, text: string}} ev
   * @returns {HTMLElement}
   */
  messageNode(ev) {
    const li = document.createElement("li");
    li.className = "msg";
    li.dataset.msgId = ev.msg_id;
    li.dataset.userId = ev.user.id;
    if (this.flagged.has(ev.msg_id)) li.classList.add("flagged");
    const body = document.createElement("span");
    body.className = "msg-body";
    if (ev.ts) {
      const time = document.createElement("time");
      time.className = "msg-time";
      time.textContent = timeOfDay(ev.ts).slice(0, 5);
      time.dateTime = new Date(ev.ts).toISOString();
      body.append(time, " ");
    }
    body.append(...messageParts(ev));
    li.append(body);
    if (this.moderator && ev.user.id !== me?.id) {
      const actions = document.createElement("span");
      actions.className = "msg-actions";
      const del = document.createElement("button");
      del.type = "button";
      del.className = "act act-delete";
      del.dataset.act = "delete";
      del.textContent = "Delete";
      del.setAttribute("aria-label", `Delete message from ${ev.user.name}`);
      const more = document.createElement("button");
      more.type = "button";
      more.className = "act";
      more.dataset.act = "user";
      more.textContent = "Mute or ban…";
      more.setAttribute("aria-haspopup", "dialog");
      more.setAttribute("aria-label", `Mute or ban ${ev.user.name}`);
      actions.append(del, more);
      li.append(actions);
    }
    return li;
  }
}

const ACTION_LABELS = { block: "Block", mask: "Mask", flag: "Flag" };
const REASON_LABELS = {
  spam: "Spam", fraud: "Fraud", harassment: "Harassment", false_claims: "False product claims",
  prohibited_item: "Prohibited item", other: "Other",
};
/** The review queue's id for reports of the show itself. */
const SHOW = "show";

/** @param {any} entry a `chat.flagged` entry @returns {HTMLElement} */
function flagNode(entry) {
  const li = document.createElement("li");
  li.className = "flag-item";
  li.dataset.msgId = entry.msg_id;
  const head = document.createElement("div");
  head.className = "flag-head";
  const who = strong(entry.user?.name ?? "?");
  head.append(who);
  if (entry.ts) {
    const time = document.createElement("time");
    time.className = "muted small";
    time.textContent = timeOfDay(entry.ts);
    head.append(" ", time);
  }
  for (const term of entry.terms ?? []) {
    const tag = document.createElement("span");
    tag.className = "tag term-action";
    tag.dataset.action = "flag";
    tag.textContent = term;
    tag.title = "Matched term";
    head.append(" ", tag);
  }
  const report = entry.report;
  if (report) {
    li.classList.add("reported");
    const count = document.createElement("span");
    count.className = "tag report-count";
    count.textContent = `Reported ×${report.count}`;
    head.append(" ", count);
    for (const [reason, n] of Object.entries(report.reasons ?? {})) {
      const tag = document.createElement("span");
      tag.className = "tag report-reason";
      tag.textContent = `${REASON_LABELS[reason] ?? reason}${Number(n) > 1 ? ` ×${n}` : ""}`;
      head.append(" ", tag);
    }
  }
  const text = document.createElement("p");
  text.className = "flag-text";
  text.textContent = entry.text;
  li.append(head, text);
  if (entry.note) {
    const note = document.createElement("p");
    note.className = "flag-note muted small";
    note.textContent = `Reporter's note: ${entry.note}`;
    li.append(note);
  }
  if (entry.context?.length > 1) {  // the message among its neighbours
    const around = document.createElement("ol");
    around.className = "flag-context small";
    around.setAttribute("aria-label", "The messages around it");
    for (const c of entry.context) {
      const line = document.createElement("li");
      if (c.msg_id === entry.msg_id) line.className = "reported-line";
      line.append(strong(c.user?.name ?? "?"), ` ${c.text}`);
      around.append(line);
    }
    li.append(around);
  }
  const row = document.createElement("div");
  row.className = "row";
  const what = entry.msg_id === SHOW ? "the report of the show"
    : `the message from ${entry.user?.name ?? "?"}`;
  const approve = document.createElement("button");
  approve.type = "button";
  approve.className = "btn btn-small";
  approve.dataset.act = "approve";
  approve.textContent = entry.msg_id === SHOW ? "Dismiss" : "Approve";
  approve.setAttribute("aria-label", `${approve.textContent} ${what}`);
  row.append(approve);
  if (entry.msg_id !== SHOW) {
    const del = document.createElement("button");
    del.type = "button";
    del.className = "btn btn-small btn-danger";
    del.dataset.act = "delete";
    del.textContent = "Delete";
    del.setAttribute("aria-label", `Delete ${what}`);
    row.append(del);
  }
  li.append(row);
  return li;
}

/** @param {string} text @returns {HTMLElement} */
function strong(text) {
  const s = document.createElement("strong");
  s.textContent = text;
  return s;
}

/** @param {string} text @returns {string} at most 80 characters */
function clip(text) {
  return text.length > 80 ? `${text.slice(0, 79)}…` : text;
}

/** @param {string[]} words @returns {string} */
function quoteList(words) {
  return words.map((w) => `“${w}”`).join(", ");
}

/** @param {any} entry @returns {string} */
function logKey(entry) {
  return `${entry.at}|${entry.by?.id}|${entry.action}|${entry.target}|${JSON.stringify(entry.details ?? {})}`;
}

// -- the user dialog ---------------------------------------------------------------------

/** @type {{panel: RoomPanel, msgId: string | null, user: {id: string, name: string}} | null} */
let dialogTarget = null;

/**
 * @param {RoomPanel} panel
 * @param {{msgId: string, user: {id: string, name: string}, text: string}} target
 */
function openUserDialog(panel, target) {
  dialogTarget = { panel, msgId: target.msgId, user: target.user };
  el.udTitle.textContent = `Moderate ${target.user.name}`;
  el.udUser.textContent = `${target.user.id} · in ${panel.title}`;
  el.udText.textContent = target.text;
  el.userDialog.returnValue = "";
  el.userDialog.showModal();
}

el.userDialog.addEventListener("close", () => {
  const target = dialogTarget;
  dialogTarget = null;
  const choice = el.userDialog.returnValue;
  if (target && choice && choice !== "cancel") target.panel.act(choice, target);
});

// -- the connection ------------------------------------------------------------------------

const client = new LiveClient({
  onEvent: (ev) => {
    if (typeof ev.ts === "number") clock.observe(ev.ts);
    panels.get(ev.room)?.onEvent(ev);
  },
  onJoin: (room, snapshot, recovered) => panels.get(room)?.onJoin(snapshot, recovered),
  onState: (state, detail) => {
    showConnection(el.conn, state, detail);
    if (state === "closed" && detail.reason === "unauthorized") {
      session.forget();
      showSignIn("The server did not accept the sign-in. Sign in again.");
    }
  },
  onError: (err) => {
    if (err.op === "join" && err.room) joinFailed(err.room, err);
  },
  refreshToken: () => session.refresh(),
});

window.__live = { client, panels };

/**
 * @param {string} room
 * @param {{code?: string, message?: string}} err
 */
function joinFailed(room, err) {
  const panel = panels.get(room);
  if (!panel) return;
  const why = err.code === "not_found" ? `There is no room "${room}".`
    : err.code === "banned" ? `You are banned from "${room}".` : explain(err);
  closeRoom(room);
  el.picker.hidden = false;
  note(el.pickerNote, why, "error", 0);
}

// -- rooms and tabs ------------------------------------------------------------------------

/** @param {string} room */
async function openRoom(room) {
  if (!ROOM_ID.test(room)) return;
  if (panels.has(room)) {
    selectRoom(room);
    return;
  }
  const panel = new RoomPanel(room);
  const info = knownRooms.find((r) => r.id === room);
  if (info) {
    panel.title = info.title;
    panel.host = info.host;
    panel.render();
  }
  panels.set(room, panel);
  el.tabs.append(panel.tab);
  el.panels.append(panel.root);
  selectRoom(room);
  saveRooms();
  renderRoomList();
  try {
    await client.join(room);
  } catch (err) {
    if (panels.get(room) === panel) joinFailed(room, err);
  }
}

/** @param {string} room */
function closeRoom(room) {
  const panel = panels.get(room);
  if (!panel) return;
  panels.delete(room);
  client.leave(room).catch(() => {});
  panel.tab.remove();
  panel.root.remove();
  if (active === room) {
    active = null;
    const next = panels.keys().next().value;
    if (next) selectRoom(next);
  }
  saveRooms();
  renderRoomList();
  renderEmpty();
}

/** @param {string} room */
function selectRoom(room) {
  active = room;
  for (const [id, panel] of panels) {
    const on = id === room;
    panel.tab.setAttribute("aria-selected", String(on));
    panel.tab.tabIndex = on ? 0 : -1;
    panel.root.hidden = !on;
    if (on) panel.feed.follow(); // scroll to the newest now that it has a layout
  }
  renderEmpty();
}

function renderEmpty() {
  el.noRooms.hidden = panels.size > 0;
  if (panels.size === 0) el.picker.hidden = false;
  el.addRoom.setAttribute("aria-expanded", String(!el.picker.hidden));
}

/** Remember the open rooms in the address (reload or share the same console). */
function saveRooms() {
  const url = new URL(location.href);
  if (panels.size) url.searchParams.set("rooms", [...panels.keys()].join(","));
  else url.searchParams.delete("rooms");
  history.replaceState(null, "", url);
}

async function loadRoomList() {
  try {
    ({ rooms: knownRooms } = await session.api("/api/rooms"));
    note(el.pickerNote, "");
  } catch (err) {
    note(el.pickerNote, explain(err), "error", 0);
  }
  renderRoomList();
}

function renderRoomList() {
  // Rooms one can moderate first, then the others; ended shows last.
  const order = (r) => (canModerate(r.id, r.host) ? 0 : 2) + (r.status === "ended" ? 1 : 0);
  const rooms = [...knownRooms].sort((a, b) => order(a) - order(b));
  el.roomList.replaceChildren(...rooms.map((room) => {
    const li = document.createElement("li");
    li.className = "room-item";
    li.dataset.room = room.id;
    const pill = document.createElement("span");
    pill.className = "pill";
    pill.dataset.status = room.status;
    pill.textContent = { live: "LIVE", scheduled: "Not live", ended: "Ended" }[room.status] ?? room.status;
    const what = document.createElement("span");
    what.className = "room-what";
    const title = strong(room.title);
    const meta = document.createElement("span");
    meta.className = "muted small";
    meta.textContent = canModerate(room.id, room.host) ? room.id : `${room.id} · watch only`;
    what.append(title, meta);
    const open = document.createElement("button");
    open.type = "button";
    const isOpen = panels.has(room.id);
    open.className = isOpen ? "btn btn-small btn-quiet" : "btn btn-small";
    open.textContent = isOpen ? "Show" : "Open";
    open.setAttribute("aria-label", `${isOpen ? "Show" : "Open"} ${room.title}`);
    open.addEventListener("click", () => {
      openRoom(room.id);
      if (window.matchMedia("(max-width: 720px)").matches) {
        el.picker.hidden = true;
        renderEmpty();
      }
    });
    li.append(pill, what, open);
    return li;
  }));
  if (!knownRooms.length) {
    const li = document.createElement("li");
    li.className = "muted";
    li.textContent = "No rooms on this server yet.";
    el.roomList.replaceChildren(li);
  }
}

// -- signing in -----------------------------------------------------------------------------

/** @param {string} [why] */
function showSignIn(why) {
  el.gateSignIn.hidden = false;
  el.console.hidden = true;
  el.signOut.hidden = true;
  el.me.textContent = "Not signed in";
  if (why) note(el.signInNote, why, "error", 0);
}

async function start() {
  if (!session.token) {
    showSignIn();
    return;
  }
  let hello;
  try {
    hello = await client.connect(session.token);
  } catch (err) {
    session.forget();
    showSignIn(explain(err));
    return;
  }
  if (!["moderator", "host", "admin"].includes(hello.user.role)) {
    client.close();
    session.forget();
    showConnection(el.conn, "idle");
    showSignIn(`That sign-in is a ${hello.user.role}: the console needs a moderator.`);
    return;
  }
  me = hello.user;
  el.me.textContent = `Signed in as ${me.name}`;
  el.gateSignIn.hidden = true;
  el.console.hidden = false;
  el.signOut.hidden = false;
  await loadRoomList();
  const wanted = (params.get("rooms") ?? "").split(",").filter((r) => ROOM_ID.test(r));
  for (const room of wanted) openRoom(room);
  if (!wanted.length) {
    // Open the rooms the sign-in covers, to start with.
    for (const id of session.claims?.rooms ?? []) {
      if (knownRooms.some((r) => r.id === id)) openRoom(id);
    }
  }
  el.picker.hidden = panels.size > 0;
  renderEmpty();
}

/** @param {string} role */
async function demoSignIn(role) {
  el.demoSignIn.disabled = el.demoSignInAdmin.disabled = true;
  note(el.signInNote, "Signing in…", "info", 0);
  try {
    await session.demo(role);
    note(el.signInNote, "");
    await start();
  } catch (err) {
    note(el.signInNote, explain(err), "error", 0);
  } finally {
    el.demoSignIn.disabled = el.demoSignInAdmin.disabled = false;
  }
}

// -- input --------------------------------------------------------------------------------------

el.demoSignIn.addEventListener("click", () => demoSignIn("moderator"));
el.demoSignInAdmin.addEventListener("click", () => demoSignIn("admin"));

el.tokenForm.addEventListener("submit", async (e) => {
  e.preventDefault();
  const token = el.tokenInput.value.trim();
  if (!token) return;
  session.use(token);
  el.tokenInput.value = "";
  await start();
});

el.signOut.addEventListener("click", () => {
  for (const room of [...panels.keys()]) closeRoom(room);
  client.close();
  session.forget();
  me = null;
  showConnection(el.conn, "idle");
  showSignIn();
});

el.addRoom.addEventListener("click", () => {
  el.picker.hidden = !el.picker.hidden;
  if (!el.picker.hidden) loadRoomList();
  renderEmpty();
});
el.pickerRefresh.addEventListener("click", loadRoomList);

// Tabs: arrow keys move between them (the selected one is the only tab stop).
el.tabs.addEventListener("click", (e) => {
  const tab = /** @type {HTMLElement} */ (e.target).closest("[role=tab]");
  if (tab instanceof HTMLElement && tab.dataset.room) selectRoom(tab.dataset.room);
});
el.tabs.addEventListener("keydown", (e) => {
  const tabs = [...panels.values()].map((p) => p.tab);
  const at = tabs.indexOf(/** @type {HTMLButtonElement} */ (document.activeElement));
  if (at < 0) return;
  let next = -1;
  if (e.key === "ArrowRight") next = (at + 1) % tabs.length;
  else if (e.key === "ArrowLeft") next = (at - 1 + tabs.length) % tabs.length;
  else if (e.key === "Home") next = 0;
  else if (e.key === "End") next = tabs.length - 1;
  if (next < 0) return;
  e.preventDefault();
  tabs[next].focus();
  selectRoom(tabs[next].dataset.room ?? "");
});

// -- start --------------------------------------------------------------------------------------

start();
