/**
 * Signing in on the staff pages (studio, console) and calling the HTTP API.
 *
 * A {@link Session} keeps one token in `sessionStorage` (per tab), gets one from
 * the demo sign-in (`POST /api/demo/token`, only on servers started with `--demo`)
 * or takes one pasted by the user, and sends it as `Authorization: Bearer` with
 * {@link Session#api}.
 *
 * @module session
 */

/**
 * The claims of a JWT, read without checking the signature (the server checks it;
 * the page only uses them to show who is signed in and which rooms they cover).
 * @param {string} token
 * @returns {{sub?: string, name?: string, role?: string, rooms?: string[], exp?: number} | null}
 */
export function readClaims(token) {
  const part = token.split(".")[1];
  if (!part) return null;
  try {
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(b64.padEnd(b64.length + ((4 - (b64.length % 4)) % 4), "=")),
      (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims === "object" ? claims : null;
  } catch {
    return null;
  }
}

/** A sign-in kept in this tab's `sessionStorage`. */
export class Session {
  /** @param {string} key the storage key, one per page */
  constructor(key) {
    this.key = key;
    /** @type {string | null} */
    this.token = sessionStorage.getItem(key);
    /** The role of the demo sign-in that gave the token, or null (a pasted token). */
    this.demoRole = sessionStorage.getItem(`${key}.demo`);
  }

  /** @returns {ReturnType<typeof readClaims>} the token's claims, or null */
  get claims() {
    return this.token ? readClaims(this.token) : null;
  }

  /** @param {string} token keep this token (pasted, or from the demo sign-in) */
  use(token) {
    this.token = token.trim();
    sessionStorage.setItem(this.key, this.token);
    this.demoRole = null;
    sessionStorage.removeItem(`${this.key}.demo`);
  }

  forget() {
    this.token = null;
    this.demoRole = null;
    sessionStorage.removeItem(this.key);
    sessionStorage.removeItem(`${this.key}.demo`);
  }

  /**
   * A new token after the server refused this one (for {@link LiveClient}'s
   * `refreshToken`): the demo sign-in again, or null for a pasted token.
   * @returns {Promise<string | null>}
   */
  async refresh() {
    if (!this.demoRole) return null;
    return this.demo(this.demoRole); // a failure is retried later by the client
  }

  /**
   * The demo sign-in: a token for `role` from `POST /api/demo/token`.
   * @param {string} role `host`, `moderator`, `admin` or `viewer`
   * @param {string} [name]
   * @returns {Promise<string>} the token (also kept)
   */
  async demo(role, name) {
    const res = await fetch("/api/demo/token", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(name ? { role, name } : { role }),
    });
    const data = await res.json().catch(() => null);
    if (!res.ok) {
      throw res.status === 404
        ? { code: "not_found", message: "This server has no demo sign-in: paste a token." }
        : (data?.error ?? { code: "internal", message: `Sign-in failed (${res.status}).` });
    }
    this.use(data.token);
    this.demoRole = role;
    sessionStorage.setItem(`${this.key}.demo`, role);
    return data.token;
  }

  /**
   * Call the HTTP API with this session's token.
   * @param {string} path e.g. `/api/rooms`
   * @param {{method?: string, body?: unknown}} [options]
   * @returns {Promise<any>} the JSON answer; rejects with the server's `{code, message}`
   */
  async api(path, options = {}) {
    /** @type {Record<string, string>} */
    const headers = {};
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    if (options.body !== undefined) headers["Content-Type"] = "application/json";
    let res;
    try {
      res = await fetch(path, {
        method: options.method ?? "GET",
        headers,
        body: options.body === undefined ? undefined : JSON.stringify(options.body),
      });
    } catch {
      throw { code: "disconnected", message: "The server cannot be reached." };
    }
    const data = await res.json().catch(() => null);
    if (!res.ok) {
      throw data?.error ?? { code: "internal", message: `${res.status} ${res.statusText}` };
    }
    return data;
  }
}

/**
 * A refusal (from a reply or the HTTP API) in words for the staff pages.
 * @param {{code?: string, message?: string, until?: number} | undefined} err
 * @returns {string}
 */
export function explain(err) {
  switch (err?.code) {
    case "unauthorized": return "Sign in again: the server did not accept the sign-in.";
    case "forbidden": return "Your sign-in does not allow that in this room.";
    case "room_not_live": return "The show is not live.";
    case "rate_limited": return "Too many changes at once. Wait a second and try again.";
    case "slow_mode": return "Slow mode is on: wait before writing again.";
    case "muted": return "You are muted in this room.";
    case "disconnected":
    case "timeout": return "Not connected right now. Try again in a moment.";
    default: return err?.message || "Something went wrong.";
  }
}
