/**
 * A small browser client for the livecommerce live-room protocol, version 1.
 *
 * One {@link LiveClient} owns one WebSocket to `/ws`. It does the `connect`
 * handshake, matches replies to commands by id, tracks each joined room's last
 * `seq` and `epoch`, re-joins with `since`/`epoch` after a reconnect or a gap in
 * `seq`, and reconnects with exponential backoff and jitter according to the close
 * code (see docs/protocol.md, "Close codes").
 *
 * Server frames are newline-delimited JSON: one frame may carry several replies
 * and events, which are handled in order.
 *
 * @example
 *   import { LiveClient } from "/js/client.js";
 *   const client = new LiveClient({
 *     onEvent: (ev) => console.log(ev.type, ev),
 *     onJoin: (room, snapshot, recovered) => { if (!recovered) rebuild(snapshot); },
 *     onState: (state) => console.log("connection:", state),
 *   });
 *   await client.connect(token);          // token may be null: a guest
 *   await client.join("demo");
 *   await client.send("chat", { room: "demo", text: "hello" });
 *
 * @module client
 */

/**
 * An error as the server sends it in a failed reply (`{code, message, ...}`;
 * `muted` and `slow_mode` also carry `until`, unix ms). The client itself rejects
 * with the same shape and these codes of its own: `disconnected` (no live
 * connection, or it closed before the reply), `timeout` (no reply in time) and
 * `too_large` (the command would exceed the 8 KiB frame limit; not sent).
 * @typedef {{code: string, message: string, until?: number}} ProtocolError
 */

/**
 * `idle` before {@link LiveClient#connect}; `connecting` during the first
 * connection; `live` once the handshake succeeded; `reconnecting` while waiting
 * for or opening a new connection; `closed` when the client stopped for good
 * (see the `reason` of the state detail).
 * @typedef {"idle" | "connecting" | "live" | "reconnecting" | "closed"} ConnectionState
 */

/**
 * Extra information passed with a state change.
 * @typedef {object} StateDetail
 * @property {number} [code] the close code that caused the change
 * @property {number} [delay] ms until the next attempt (`reconnecting`)
 * @property {string} [reason] why: `unauthorized`, `banned`, `abuse`, `closed_by_client`, ...
 */

/** Close codes of the protocol. */
export const CLOSE = Object.freeze({
  GOING_AWAY: 1001,
  TOO_LARGE: 1009,
  UNAUTHORIZED: 4001,
  BANNED: 4003,
  ABUSE: 4008,
  SLOW_CONSUMER: 4009,
});

/** Largest command frame the server answers normally (bytes of UTF-8). */
export const MAX_FRAME_BYTES = 8 * 1024;

/** Join refusals after which re-joining the room is pointless. */
const PERMANENT_JOIN_ERRORS = new Set(["not_found", "banned", "forbidden", "unauthorized"]);

const encoder = new TextEncoder();

/**
 * @param {string} code
 * @param {string} message
 * @returns {ProtocolError}
 */
function clientError(code, message) {
  return { code, message };
}

/** @returns {string} `ws(s)://<this page's host>/ws` */
function defaultUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}

/**
 * Per-room bookkeeping.
 * @typedef {object} RoomTrack
 * @property {number | null} seq last seq applied (null before the first join)
 * @property {string | null} epoch the room history's epoch
 * @property {boolean} joined the current connection has joined the room
 * @property {boolean} joining a join is in flight; seq events are held back
 */

/** A live-room connection that survives reconnects. */
export class LiveClient {
  /**
   * @param {object} [options]
   * @param {string} [options.url] WebSocket URL; default `/ws` on this page's host.
   * @param {(event: object) => void} [options.onEvent] every event, in order;
   *   sequenced events arrive exactly once and gap-free per room.
   * @param {(room: string, snapshot: object, recovered: boolean) => void} [options.onJoin]
   *   after every successful join (including automatic re-joins). When `recovered`
   *   is false, rebuild the room's view from `snapshot`; when true, keep it: the
   *   missed events follow through `onEvent`.
   * @param {(state: ConnectionState, detail: StateDetail) => void} [options.onState]
   *   connection state changes.
   * @param {(error: ProtocolError & {op: string, room?: string}) => void} [options.onError]
   *   failures of commands the client sent by itself (automatic re-joins, pings).
   * @param {() => (string | null | Promise<string | null>)} [options.refreshToken]
   *   called when the server refuses the token (reply `unauthorized` to `connect`,
   *   or close 4001) to sign in again; return a new token, or null to stop. Without
   *   it the client stops with reason `unauthorized`.
   * @param {number} [options.commandTimeoutMs=10000] reject a command with `timeout`
   *   when no reply came in this time.
   * @param {number} [options.pingIntervalMs=25000] send `ping` this often; a ping
   *   without reply drops the connection and reconnects. 0 disables.
   * @param {number} [options.backoffBaseMs=500] first reconnect delay (before jitter).
   * @param {number} [options.backoffMaxMs=15000] longest reconnect delay.
   * @param {number} [options.abuseBackoffMs=30000] first delay after close 4008,
   *   doubling up to 5 minutes while it repeats.
   */
  constructor(options = {}) {
    this.url = options.url ?? defaultUrl();
    this.onEvent = options.onEvent ?? (() => {});
    this.onJoin = options.onJoin ?? (() => {});
    this.onState = options.onState ?? (() => {});
    this.onError = options.onError ?? (() => {});
    this.refreshToken = options.refreshToken ?? null;
    this.commandTimeoutMs = options.commandTimeoutMs ?? 10_000;
    this.pingIntervalMs = options.pingIntervalMs ?? 25_000;
    this.backoffBaseMs = options.backoffBaseMs ?? 500;
    this.backoffMaxMs = options.backoffMaxMs ?? 15_000;
    this.abuseBackoffMs = options.abuseBackoffMs ?? 30_000;

    /** @type {ConnectionState} */
    this.state = "idle";
    /** The `user` of the last successful handshake (`{id, name, role}`), or null. */
    this.user = null;
    /** The server's id for the current connection, or null. */
    this.clientId = null;

    /** @type {WebSocket | null} */
    this._ws = null;
    this._token = null;
    this._live = false;
    this._stopped = true;
    this._nextId = 1;
    this._attempt = 0;
    this._abuseStrikes = 0;
    this._authFailures = 0;
    this._authRefused = false;
    /** @type {Map<number, {resolve: Function, reject: Function, timer: number, onReply?: Function}>} */
    this._pending = new Map();
    /** @type {Map<string, RoomTrack>} */
    this._rooms = new Map();
    /** @type {{resolve: Function, reject: Function}[]} */
    this._waiters = [];
    this._reconnectTimer = 0;
    this._pingTimer = 0;
    this._stableTimer = 0;
    /** Rooms whose join went out with this connection's `connect`. */
    this._earlyJoins = new Set();
  }

  /**
   * Open the connection and do the handshake. Network failures are retried with
   * backoff; the promise settles on the first successful handshake, or rejects if
   * the client stops first (token refused with no `refreshToken`, banned, or
   * {@link LiveClient#close}).
   * @param {string | null} [token] an HS256 JWT; null or omitted connects as a guest.
   * @returns {Promise<{client_id: string, user: {id: string, name: string, role: string}}>}
   */
  connect(token = null) {
    this._token = token || null;
    this._stopped = false;
    this._attempt = 0;
    this._authFailures = 0;
    this._clearTimers();
    this._abandon();
    const done = new Promise((resolve, reject) => this._waiters.push({ resolve, reject }));
    this._open("connecting");
    return done;
  }

  /**
   * Join a room (or re-join it). The room is remembered and joined again after
   * every reconnect, with `since`/`epoch`, until {@link LiveClient#leave}.
   * @param {string} room
   * @returns {Promise<{snapshot: object, recovered: boolean}>} the reply data;
   *   {@link LiveClient} has already called `onJoin` with it.
   */
  join(room) {
    if (!this._rooms.has(room)) {
      this._rooms.set(room, { seq: null, epoch: null, joined: false, joining: false });
    }
    return this._sendJoin(room, false);
  }

  /**
   * Leave a room and stop re-joining it.
   * @param {string} room
   * @returns {Promise<object>} the reply data (`{}`); resolves at once when offline.
   */
  leave(room) {
    this._rooms.delete(room);
    if (!this._live) return Promise.resolve({});
    return this._request("leave", { room });
  }

  /**
   * Send a command and wait for its reply.
   * @param {string} op e.g. `chat`, `like`, `announce`, `mod.ban`; `join` and
   *   `leave` go through {@link LiveClient#join} / {@link LiveClient#leave}.
   * @param {object} [fields] the command's fields (`room`, `text`, ...).
   * @returns {Promise<object>} the reply's `data`; rejects with a {@link ProtocolError}.
   */
  send(op, fields = {}) {
    if (op === "join") return this.join(fields.room);
    if (op === "leave") return this.leave(fields.room);
    if (op === "connect") {
      return Promise.reject(clientError("bad_request", "use connect(token)"));
    }
    return this._request(op, fields);
  }

  /**
   * Where the client stands in a room.
   * @param {string} room
   * @returns {{seq: number | null, epoch: string | null, joined: boolean} | null}
   */
  roomState(room) {
    const t = this._rooms.get(room);
    return t ? { seq: t.seq, epoch: t.epoch, joined: t.joined } : null;
  }

  /** Close the connection for good (no reconnect). Pending commands reject. */
  close() {
    this._stop("closed_by_client");
  }

  // -- connection ------------------------------------------------------------------

  /** @param {ConnectionState} state */
  _open(state) {
    this._setState(state, {});
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (err) {
      this._onDisconnect(1006);
      return;
    }
    this._ws = ws;
    this._authRefused = false;
    ws.onopen = () => {
      if (ws !== this._ws) return;
      const fields = this._token ? { token: this._token } : {};
      // The handshake completes as its reply is read (not a promise turn later),
      // so it is done before the replies to the joins sent behind it.
      const onReply = (msg) => {
        if (msg.ok) this._onHandshake(ws, msg.data ?? {});
      };
      this._request("connect", fields, { handshake: true, onReply }).catch((err) => {
        if (err.code === "unauthorized") this._authRefused = true;
        // The server closes the socket after a refused connect; the close
        // handler decides what to do next.
      });
      // The rooms to join again go right behind `connect`, without waiting for
      // its reply: one round trip less on every reconnect (docs/protocol.md).
      this._earlyJoins = new Set(this._rooms.keys());
      for (const room of this._earlyJoins) {
        this._sendJoin(room, true, true).catch(() => {}); // reported through onError
      }
    };
    ws.onmessage = (e) => {
      if (ws === this._ws) this._onFrame(e.data);
    };
    ws.onclose = (e) => {
      if (ws === this._ws) this._onDisconnect(e.code);
    };
    ws.onerror = () => {}; // always followed by a close event
  }

  _onHandshake(ws, data) {
    if (ws !== this._ws) return;
    this.user = data.user;
    this.clientId = data.client_id;
    this._live = true;
    this._authFailures = 0;
    this._setState("live", {});
    // A connection that stays up for a while resets the backoff; one that the
    // server drops straight away keeps growing it.
    this._stableTimer = setTimeout(() => {
      this._attempt = 0;
      this._abuseStrikes = 0;
    }, 10_000);
    if (this.pingIntervalMs > 0) {
      this._pingTimer = setInterval(() => this._ping(), this.pingIntervalMs);
    }
    for (const room of this._rooms.keys()) {
      if (this._earlyJoins.has(room)) continue; // sent with connect
      this._sendJoin(room, true).catch(() => {}); // reported through onError
    }
    for (const w of this._waiters.splice(0)) w.resolve(data);
  }

  _ping() {
    this._request("ping", {}).catch((err) => {
      if (err.code === "timeout") {
        // No answer: the connection is dead even if the browser has not noticed.
        this._abandon();
        this._onDisconnect(1006);
      }
    });
  }

  /** Forget the current socket (no more callbacks from it) and close it. */
  _abandon() {
    const ws = this._ws;
    if (!ws) return;
    this._ws = null;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try {
      ws.close(1000);
    } catch {
      /* already closed */
    }
    this._teardown();
  }

  /** Reset per-connection state: timers, pending commands, joined flags. */
  _teardown() {
    this._live = false;
    clearInterval(this._pingTimer);
    clearTimeout(this._stableTimer);
    const pending = [...this._pending.values()];
    this._pending.clear();
    for (const p of pending) {
      clearTimeout(p.timer);
      p.reject(clientError("disconnected", "the connection closed before the reply"));
    }
    for (const t of this._rooms.values()) {
      t.joined = false;
      t.joining = false;
    }
  }

  /** @param {number} code the close code (1006 when there was none) */
  _onDisconnect(code) {
    this._ws = null;
    this._teardown();
    if (this._stopped) return;
    if (code === CLOSE.UNAUTHORIZED || this._authRefused) {
      this._reauthenticate(code);
    } else if (code === CLOSE.BANNED) {
      this._stop("banned", code);
    } else if (code === CLOSE.ABUSE) {
      const cap = Math.min(300_000, this.abuseBackoffMs * 2 ** this._abuseStrikes++);
      this._schedule(jitter(cap), code, "abuse");
    } else {
      // 1001 going away, 4009 slow consumer, 1006 network, 1009 (our bug), others.
      this._schedule(this._nextDelay(), code, code === CLOSE.SLOW_CONSUMER ? "slow" : "lost");
    }
  }

  async _reauthenticate(code) {
    this._authFailures += 1;
    if (!this.refreshToken || this._authFailures > 3) {
      this._stop("unauthorized", code);
      return;
    }
    const delay = this._nextDelay();
    this._setState("reconnecting", { code, delay, reason: "unauthorized" });
    await new Promise((r) => {
      this._reconnectTimer = setTimeout(r, delay);
    });
    if (this._stopped) return;
    let token;
    try {
      token = await this.refreshToken();
    } catch {
      token = undefined; // sign-in failed: try again later
    }
    if (this._stopped) return;
    if (token === null) {
      this._stop("unauthorized", code);
      return;
    }
    if (token !== undefined) this._token = token;
    this._open("reconnecting");
  }

  _schedule(delay, code, reason) {
    this._setState("reconnecting", { code, delay, reason });
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = setTimeout(() => {
      if (!this._stopped) this._open("reconnecting");
    }, delay);
  }

  _nextDelay() {
    const cap = Math.min(this.backoffMaxMs, this.backoffBaseMs * 2 ** this._attempt);
    this._attempt += 1;
    return jitter(cap);
  }

  _stop(reason, code) {
    this._stopped = true;
    this._clearTimers();
    this._abandon();
    this._setState("closed", { reason, code });
    const err = clientError(reason === "closed_by_client" ? "disconnected" : reason,
      `the client stopped: ${reason}`);
    for (const w of this._waiters.splice(0)) w.reject(err);
  }

  _clearTimers() {
    clearTimeout(this._reconnectTimer);
    clearInterval(this._pingTimer);
    clearTimeout(this._stableTimer);
  }

  _setState(state, detail) {
    if (state === this.state && state !== "reconnecting") return;
    this.state = state;
    this.onState(state, detail);
  }

  // -- commands and replies ----------------------------------------------------------

  /**
   * @param {string} op
   * @param {object} fields
   * @param {{handshake?: boolean, onReply?: (msg: object) => void}} [opts]
   *   `onReply` runs synchronously when the reply arrives, before any later line.
   * @returns {Promise<object>}
   */
  _request(op, fields, opts = {}) {
    const ws = this._ws;
    if (!ws || ws.readyState !== WebSocket.OPEN || (!opts.handshake && !this._live)) {
      return Promise.reject(clientError("disconnected", "not connected"));
    }
    const id = this._nextId++;
    const text = JSON.stringify({ ...fields, op, id });
    if (encoder.encode(text).length > MAX_FRAME_BYTES) {
      return Promise.reject(clientError("too_large", `command over ${MAX_FRAME_BYTES} bytes`));
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(clientError("timeout", `no reply to ${op} in ${this.commandTimeoutMs} ms`));
      }, this.commandTimeoutMs);
      this._pending.set(id, { resolve, reject, timer, onReply: opts.onReply });
      ws.send(text);
    });
  }

  /**
   * @param {string} room
   * @param {boolean} background sent by the client itself (errors go to onError)
   * @param {boolean} [early] sent right behind `connect`, before its reply (a
   *   refused `connect` closes the socket: that is reported by the close, not here)
   */
  _sendJoin(room, background, early = false) {
    const track = this._rooms.get(room);
    if (!track) return Promise.reject(clientError("bad_request", "room not tracked"));
    const fields = { room };
    if (track.seq !== null && track.epoch) {
      fields.since = track.seq;
      fields.epoch = track.epoch;
    }
    const onReply = (msg) => {
      if (this._rooms.get(room) !== track) return; // left meanwhile
      track.joining = false;
      if (!msg.ok) {
        if (PERMANENT_JOIN_ERRORS.has(msg.error?.code)) this._rooms.delete(room);
        return;
      }
      const { snapshot, recovered } = msg.data;
      track.joined = true;
      track.epoch = snapshot.epoch;
      // Recovered: the missed events follow right after this reply, from `since`.
      if (!recovered) track.seq = snapshot.seq;
      this.onJoin(room, snapshot, recovered);
    };
    const sent = this._request("join", fields, { onReply, handshake: early });
    if (this._live || early) track.joining = true;
    sent.catch((err) => {
      if (this._rooms.get(room) === track && err.code === "timeout") track.joining = false;
      if (early && err.code === "disconnected") return;
      if (background) this.onError({ ...err, op: "join", room });
    });
    return sent;
  }

  /** @param {unknown} data one server frame: newline-delimited JSON */
  _onFrame(data) {
    if (typeof data !== "string") return; // the server sends text frames only
    for (const line of data.split("\n")) {
      if (!line) continue;
      let msg;
      try {
        msg = JSON.parse(line);
      } catch {
        continue;
      }
      if (typeof msg.id === "number" && "ok" in msg) this._onReply(msg);
      else if (typeof msg.type === "string") this._onEvent(msg);
    }
  }

  _onReply(msg) {
    const p = this._pending.get(msg.id);
    if (!p) return; // timed out already
    this._pending.delete(msg.id);
    clearTimeout(p.timer);
    p.onReply?.(msg);
    if (msg.ok) p.resolve(msg.data ?? {});
    else p.reject(msg.error ?? clientError("internal", "malformed reply"));
  }

  _onEvent(ev) {
    const track = this._rooms.get(ev.room);
    if (!track) return; // a room we left
    if (typeof ev.seq === "number") {
      // While a join is in flight its snapshot (or replay) supersedes these.
      if (!track.joined || track.joining) return;
      if (ev.seq <= track.seq) return; // already applied
      if (ev.seq !== track.seq + 1) {
        this._sendJoin(ev.room, true).catch(() => {}); // gap: re-join with since
        return;
      }
      track.seq = ev.seq;
    }
    if (ev.type === "moderation" && ev.action === "banned") {
      // The server has removed this user from the room; joining again is refused.
      this._rooms.delete(ev.room);
    }
    this.onEvent(ev);
  }
}

/**
 * "Equal jitter": a random delay between half of `cap` and `cap`.
 * @param {number} cap
 * @returns {number}
 */
function jitter(cap) {
  return Math.round(cap / 2 + (Math.random() * cap) / 2);
}

/**
 * Batches like taps into at most one `like` command per interval, with a count
 * of at most 50 (the protocol's limit); taps beyond that go in the next batch.
 * Likes are best effort: a batch the server refuses is dropped.
 */
export class LikeBatcher {
  /**
   * @param {LiveClient} client
   * @param {string} room
   * @param {object} [options]
   * @param {number} [options.intervalMs=300]
   * @param {number} [options.maxCount=50]
   * @param {number} [options.maxPending=500] taps beyond this are ignored.
   * @param {(err: ProtocolError) => void} [options.onError]
   */
  constructor(client, room, options = {}) {
    this.client = client;
    this.room = room;
    this.intervalMs = options.intervalMs ?? 300;
    this.maxCount = options.maxCount ?? 50;
    this.maxPending = options.maxPending ?? 500;
    this.onError = options.onError ?? (() => {});
    this.pending = 0;
    this._timer = 0;
  }

  /** Count `n` taps; they are sent within `intervalMs`. @param {number} [n=1] */
  tap(n = 1) {
    this.pending = Math.min(this.maxPending, this.pending + n);
    if (!this._timer) this._timer = setTimeout(() => this._flush(), this.intervalMs);
  }

  /** Drop unsent taps and stop. */
  dispose() {
    clearTimeout(this._timer);
    this._timer = 0;
    this.pending = 0;
  }

  _flush() {
    this._timer = 0;
    const count = Math.min(this.pending, this.maxCount);
    this.pending -= count;
    if (count > 0) this.client.send("like", { room: this.room, count }).catch(this.onError);
    if (this.pending > 0) this._timer = setTimeout(() => this._flush(), this.intervalMs);
  }
}

/**
 * A fresh idempotency key for one buy intent (see docs/protocol.md, "Idempotency
 * keys"): 32 random hex digits. Uses `crypto.getRandomValues`, which, unlike
 * `crypto.randomUUID`, also exists on pages served over plain http.
 * @returns {string}
 */
export function newOrderKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Reply errors after which an `order` may or may not have been placed. */
const UNKNOWN_OUTCOME = new Set(["disconnected", "timeout"]);

/**
 * Send `order` for one buy intent and retry it, with the same key, while its outcome
 * is unknown (no reply: `disconnected` or `timeout`). The server answers a repeated
 * key with the order it placed the first time, so a retry never places a second
 * hold. Refusals (`sold_out`, `limit_exceeded`, ...) are not retried: they reject.
 *
 * @param {LiveClient} client
 * @param {{room: string, sale: string, qty: number, key: string, coupon?: string}} intent
 *   make `key` with {@link newOrderKey} once per intent (one press of "Buy") and keep
 *   it; `coupon`: a claimed coupon's id, or `"best"` (the server picks).
 * @param {object} [options]
 * @param {number} [options.attempts=4] sends in all, the first included.
 * @param {number} [options.liveTimeoutMs=20000] how long to wait for the client to
 *   be live again before an attempt; rejects with `disconnected` after that.
 * @param {(err: ProtocolError, attempt: number) => void} [options.onRetry] called
 *   before each retry.
 * @returns {Promise<object>} the reply data, `{order}`.
 */
export async function placeOrder(client, intent, options = {}) {
  const attempts = options.attempts ?? 4;
  const liveTimeoutMs = options.liveTimeoutMs ?? 20_000;
  /** @type {Record<string, any>} */
  const fields = { room: intent.room, sale: intent.sale, qty: intent.qty, key: intent.key };
  if (intent.coupon) fields.coupon = intent.coupon;
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await client.send("order", fields);
    } catch (err) {
      if (!UNKNOWN_OUTCOME.has(err?.code) || attempt >= attempts) throw err;
      options.onRetry?.(err, attempt);
      await whenLive(client, liveTimeoutMs);
    }
  }
}

/**
 * Resolve once `client.state` is `live` (checked every 100 ms); reject with
 * `disconnected` when the client stops for good or `timeoutMs` passes first.
 * @param {LiveClient} client
 * @param {number} timeoutMs
 * @returns {Promise<void>}
 */
export function whenLive(client, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const check = () => {
      if (client.state === "live") resolve();
      else if (client.state === "closed" || Date.now() > deadline) {
        reject(clientError("disconnected", "not connected"));
      } else setTimeout(check, 100);
    };
    check();
  });
}
