/**
 * Live video in the pages (see docs/media.md, "The pages"):
 *
 * - {@link Broadcast}: the studio sends its camera and microphone to the server over
 *   WebRTC with WHIP (`POST /api/rooms/{room}/whip`), H.264 preferred so that the
 *   server's HLS is a remux, VP8 when the browser has no H.264 encoder.
 * - {@link LivePlayer}: the viewer page plays the room's stream over WebRTC with WHEP
 *   (`POST /api/rooms/{room}/whep`), or over HLS (`/hls/{room}/live.m3u8`) when the
 *   server has no WebRTC seat left (503 `over_capacity`) or WebRTC fails; it waits
 *   and retries while the host is not live, and starts again when the stream ends.
 * - {@link playHls}: HLS in a `<video>`, with hls.js where the browser has Media
 *   Source Extensions (loaded on first use from `/vendor/hls.min.js`, which the
 *   install step copies from the npm registry), else the browser's own HLS.
 *
 * No trickle ICE: an offer goes out once its ICE candidates are gathered, as the
 * server wants (RFC 9725 as far as aiortc allows).
 *
 * @module video
 */

/** Where the install step puts hls.js (scripts/_env.sh, `ensure_hls`; the Dockerfile). */
export const HLS_JS = "/vendor/hls.min.js";

/** The H.264 profiles the server relays (aiortc's), best first: constrained baseline, baseline. */
const H264_PROFILES = ["42e01f", "42001f"];

/** Longest wait for ICE gathering before the offer goes out with what it has. */
const GATHER_TIMEOUT_MS = 3000;
/** Longest wait for a WebRTC connection (and its first frame) before giving up on it. */
const CONNECT_TIMEOUT_MS = 12_000;
/** A playing stream with no new frame this long is over (or stuck): start again. */
const STALL_MS = { webrtc: 8000, hls: 20_000 };
/** Waits between tries while the host is not live (then the last one, again and again). */
const RETRY_MS = [2000, 3000, 5000, 8000, 13_000, 20_000];

/**
 * A refusal from the media endpoints (`{"error": {"code", "message", ...}}`), or a
 * failure of our own (`status` 0: `disconnected`, `unsupported`, `webrtc_failed`, ...).
 */
export class StreamError extends Error {
  /**
   * @param {number} status the HTTP status, 0 when there was no answer
   * @param {{code?: string, message?: string, fallback?: string}} [error] the body's `error`
   */
  constructor(status, error = {}) {
    super(error.message || (status ? `HTTP ${status}` : "failed"));
    this.name = "StreamError";
    this.status = status;
    this.code = error.code ?? (status ? `http_${status}` : "failed");
    /** `"hls"` when the server says to watch over HLS instead. */
    this.fallback = error.fallback ?? null;
  }
}

/**
 * POST an SDP offer (WHIP or WHEP).
 * @param {string} url
 * @param {string} sdp
 * @param {string | null} token sent as `Authorization: Bearer` when given
 * @returns {Promise<{answer: string, location: string | null}>} the answer and the
 *   session's URL (to DELETE)
 * @throws {StreamError}
 */
async function postOffer(url, sdp, token) {
  /** @type {Record<string, string>} */
  const headers = { "Content-Type": "application/sdp" };
  if (token) headers.Authorization = `Bearer ${token}`;
  let res;
  try {
    res = await fetch(url, { method: "POST", headers, body: sdp });
  } catch {
    throw new StreamError(0, { code: "disconnected", message: "The server cannot be reached." });
  }
  if (res.status === 201) {
    const location = res.headers.get("Location");
    return { answer: await res.text(), location: location ? new URL(location, res.url).href : null };
  }
  const data = await res.json().catch(() => null);
  throw new StreamError(res.status, data?.error ?? { message: `${res.status} ${res.statusText}` });
}

/**
 * DELETE a WHIP or WHEP session; never throws.
 * @param {string} url the session's `Location`
 * @param {string | null} token
 * @param {boolean} [keepalive] for `pagehide`: the request outlives the page
 * @returns {Promise<boolean>} the server ended it (or it had ended already)
 */
export async function endSession(url, token, keepalive = false) {
  /** @type {Record<string, string>} */
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  try {
    const res = await fetch(url, { method: "DELETE", headers, keepalive });
    return res.ok || res.status === 404;
  } catch {
    return false;
  }
}

/**
 * Until ICE gathering is complete (no trickle ICE), or {@link GATHER_TIMEOUT_MS}.
 * @param {RTCPeerConnection} pc
 * @returns {Promise<void>}
 */
function gathered(pc) {
  return new Promise((resolve) => {
    const finish = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    };
    const check = () => {
      if (pc.iceGatheringState === "complete") finish();
    };
    const timer = setTimeout(finish, GATHER_TIMEOUT_MS);
    pc.addEventListener("icegatheringstatechange", check);
    check();
  });
}

/**
 * Until the connection is up.
 * @param {RTCPeerConnection} pc
 * @param {number} timeoutMs
 * @returns {Promise<void>} rejects with `webrtc_failed` on failure or timeout
 */
function connected(pc, timeoutMs) {
  return new Promise((resolve, reject) => {
    const finish = (/** @type {string | null} */ why) => {
      clearTimeout(timer);
      pc.removeEventListener("connectionstatechange", check);
      if (why) reject(new StreamError(0, { code: "webrtc_failed", message: why }));
      else resolve();
    };
    const check = () => {
      const state = pc.connectionState;
      if (state === "connected") finish(null);
      else if (state === "failed" || state === "closed") finish(`the connection ${state}`);
    };
    const timer = setTimeout(() => finish("no connection in time"), timeoutMs);
    pc.addEventListener("connectionstatechange", check);
    check();
  });
}

/**
 * The codecs an SDP sends or receives for `kind`, in the order of its `m=` line.
 * @param {string} sdp
 * @param {"audio" | "video"} kind
 * @returns {string[]} names as in `a=rtpmap` ("H264", "VP8", "opus", "rtx", ...)
 */
export function sdpCodecs(sdp, kind) {
  const sections = sdp.split(/\r?\n(?=m=)/);
  const section = sections.find((s) => s.startsWith(`m=${kind} `));
  if (!section) return [];
  const payloads = section.split(/\r?\n/)[0].split(" ").slice(3);
  /** @type {Map<string, string>} */
  const names = new Map();
  for (const m of section.matchAll(/^a=rtpmap:(\d+) ([^/\s]+)/gm)) names.set(m[1], m[2]);
  return payloads.map((pt) => names.get(pt) ?? pt);
}

/** @param {string | undefined} name an rtpmap name @returns {string} for people */
function codecLabel(name) {
  const labels = { h264: "H.264", vp8: "VP8", vp9: "VP9", av1: "AV1", opus: "Opus" };
  return labels[/** @type {keyof labels} */ ((name ?? "").toLowerCase())] ?? name ?? "?";
}

/**
 * Prefer H.264 (the profiles the server relays, packetization-mode 1) on a video
 * transceiver, then VP8, with their retransmission codec. Without an H.264 encoder
 * (not in `RTCRtpSender.getCapabilities`) the browser sends VP8.
 * @param {RTCRtpTransceiver} transceiver
 * @returns {boolean} H.264 is preferred (the browser can encode it)
 */
export function preferH264(transceiver) {
  if (typeof transceiver.setCodecPreferences !== "function") return false;
  const sendable = RTCRtpSender.getCapabilities?.("video")?.codecs ?? [];
  const receivable = RTCRtpReceiver.getCapabilities?.("video")?.codecs ?? [];
  const profile = (/** @type {RTCRtpCodec} */ c) =>
    /profile-level-id=([0-9a-f]{6})/i.exec(c.sdpFmtpLine ?? "")?.[1]?.toLowerCase() ?? "";
  const ordered = (/** @type {RTCRtpCodec[]} */ codecs) => {
    const h264 = codecs
      .filter((c) => c.mimeType.toLowerCase() === "video/h264"
        && /packetization-mode=1/.test(c.sdpFmtpLine ?? "")
        && H264_PROFILES.includes(profile(c)))
      .sort((a, b) => H264_PROFILES.indexOf(profile(a)) - H264_PROFILES.indexOf(profile(b)));
    const vp8 = codecs.filter((c) => c.mimeType.toLowerCase() === "video/vp8");
    const rtx = codecs.filter((c) => c.mimeType.toLowerCase() === "video/rtx");
    return { h264, list: [...h264, ...vp8, ...rtx] };
  };
  const { h264, list } = ordered(sendable);
  if (!list.length) return false;
  try {
    transceiver.setCodecPreferences(list);
  } catch {
    // Older browsers take only receiver capabilities here: the same codecs, from there.
    try {
      transceiver.setCodecPreferences(ordered(receivable).list.filter((c) =>
        list.some((s) => s.mimeType === c.mimeType && s.sdpFmtpLine === c.sdpFmtpLine)));
    } catch {
      return false;
    }
  }
  return h264.length > 0;
}

// -- publishing (WHIP) ---------------------------------------------------------------

/**
 * `connecting` (offer sent, waiting for the connection); `live` (media flows, the
 * detail has the codecs); `stopped` (by {@link Broadcast#stop}); `failed` (the detail
 * has the server's `status`, `code` and `message`).
 * @typedef {"connecting" | "live" | "stopped" | "failed"} BroadcastState
 */

/**
 * One publishing session: a camera (and microphone) stream sent to the server with
 * WHIP until {@link Broadcast#stop}.
 */
export class Broadcast {
  /**
   * @param {{url: string, token: string | null,
   *   onState: (state: BroadcastState, detail: {video?: string, audio?: string,
   *     status?: number, code?: string, message?: string}) => void}} options
   *   `url`: `/api/rooms/{room}/whip`; `token`: the host's.
   */
  constructor(options) {
    this.url = options.url;
    this.token = options.token;
    this.onState = options.onState;
    /** @type {BroadcastState} */
    this.state = "connecting";
    /** @type {RTCPeerConnection | null} */
    this.pc = null;
    /** The session's URL once the server accepted the offer. @type {string | null} */
    this.location = null;
    /** The codecs in use once live (`H.264`, `VP8`; `Opus`). */
    this.codecs = { video: "", audio: "" };
  }

  /**
   * Send `stream`'s tracks. Resolves once live; rejects (after `onState("failed")`)
   * with a {@link StreamError} when the server refuses or the connection fails.
   * @param {MediaStream} stream
   */
  async start(stream) {
    this._set("connecting", {});
    const pc = (this.pc = new RTCPeerConnection());
    try {
      for (const track of stream.getTracks()) {
        const t = pc.addTransceiver(track, { direction: "sendonly", streams: [stream] });
        if (track.kind === "video") preferH264(t);
      }
      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc);
      const offer = pc.localDescription?.sdp ?? "";
      const { answer, location } = await postOffer(this.url, offer, this.token);
      this.location = location;
      if (this.state === "stopped") {
        // Stopped while the offer was out: end the session the server just made.
        if (location) await endSession(location, this.token);
        return;
      }
      this.codecs = {
        video: codecLabel(sdpCodecs(answer, "video")[0]),
        audio: codecLabel(sdpCodecs(answer, "audio")[0]),
      };
      await pc.setRemoteDescription({ type: "answer", sdp: answer });
      await connected(pc, CONNECT_TIMEOUT_MS);
    } catch (err) {
      if (this.state === "stopped") return;
      const error = err instanceof StreamError
        ? err : new StreamError(0, { code: "webrtc_failed", message: String(err?.message ?? err) });
      this._fail(error);
      throw error;
    }
    if (this.state !== "connecting") return;
    const lost = (/** @type {string} */ message) => {
      if (this.state === "live") this._fail(new StreamError(0, { code: "connection_lost", message }));
    };
    pc.addEventListener("connectionstatechange", () => {
      if (pc.connectionState === "failed") lost("The connection to the server was lost.");
    });
    // The server closing the connection (the room ended, the server restarts): Chrome's
    // DTLS transport says so at once, its connection state only seconds later.
    const dtls = pc.getSenders()[0]?.transport;
    dtls?.addEventListener("statechange", () => {
      if (dtls.state === "closed") lost("The server ended the broadcast.");
      else if (dtls.state === "failed") lost("The connection to the server was lost.");
    });
    this._set("live", { ...this.codecs });
  }

  /**
   * Stop sending and end the session on the server (DELETE its URL).
   * @param {{keepalive?: boolean}} [options] `keepalive` for `pagehide`
   * @returns {Promise<void>}
   */
  async stop(options = {}) {
    if (this.state === "stopped") return;
    const wasFailed = this.state === "failed";
    this.state = "stopped";
    // The server first (it then ends the stream for viewers), the connection after.
    if (this.location && !wasFailed) await endSession(this.location, this.token, options.keepalive);
    this.pc?.close();
    this.onState("stopped", {});
  }

  /** @param {StreamError} err */
  _fail(err) {
    this.pc?.close();
    const location = this.location;
    if (location) endSession(location, this.token); // the server may still hold the room
    this._set("failed", { status: err.status, code: err.code, message: err.message });
  }

  /** @param {BroadcastState} state @param {object} detail */
  _set(state, detail) {
    this.state = state;
    this.onState(state, detail);
  }
}

// -- HLS ---------------------------------------------------------------------------

/** @type {Promise<any> | null} */
let hlsJs = null;

/**
 * hls.js, loaded once with a `<script>` on first use.
 * @returns {Promise<any>} the `Hls` class; rejects when it cannot be loaded
 */
function loadHlsJs() {
  if (!hlsJs) {
    hlsJs = new Promise((resolve, reject) => {
      const w = /** @type {any} */ (window);
      if (w.Hls) {
        resolve(w.Hls);
        return;
      }
      const script = document.createElement("script");
      script.src = HLS_JS;
      script.async = true;
      script.onload = () => (w.Hls ? resolve(w.Hls) : reject(new Error("hls.js did not load")));
      script.onerror = () => {
        hlsJs = null;
        script.remove();
        reject(new Error(`${HLS_JS} could not be loaded`));
      };
      document.head.append(script);
    });
  }
  return hlsJs;
}

/** Media Source Extensions (or Safari's managed variant), which hls.js plays on. */
function hasMediaSource() {
  const w = /** @type {any} */ (window);
  return Boolean(w.ManagedMediaSource || w.MediaSource);
}

/**
 * An HLS playback in a `<video>`; {@link HlsPlayback#destroy} detaches it.
 * @typedef {{engine: "hls.js" | "native", destroy: () => void}} HlsPlayback
 */

/**
 * Play an HLS playlist in `video`: with hls.js where the browser has Media Source
 * Extensions, else natively (`canPlayType("application/vnd.apple.mpegurl")`).
 * @param {HTMLVideoElement} video
 * @param {string} url the playlist
 * @param {{live?: boolean, onFatal?: (why: string) => void}} [options] `onFatal`:
 *   the playback broke for good (network or media error it could not get over)
 * @returns {Promise<HlsPlayback>}
 * @throws {StreamError} `unsupported` when the browser can play HLS neither way
 */
export async function playHls(video, url, options = {}) {
  const onFatal = options.onFatal ?? (() => {});
  if (hasMediaSource()) {
    let Hls = null;
    try {
      Hls = await loadHlsJs();
    } catch {
      Hls = null; // not installed: the browser's own HLS, if it has one
    }
    if (Hls?.isSupported()) {
      const hls = new Hls({
        // Segments are at most 2 s: start 3 of them behind the live edge.
        liveSyncDurationCount: 3,
        backBufferLength: options.live ? 10 : 30,
        manifestLoadingMaxRetry: 2,
        levelLoadingMaxRetry: 3,
      });
      hls.on(Hls.Events.ERROR, (/** @type {any} */ _event, /** @type {any} */ data) => {
        if (!data?.fatal) return;
        if (data.type === Hls.ErrorTypes.MEDIA_ERROR && !hls.__recovered) {
          hls.__recovered = true; // one try at getting over a decoding hiccup
          hls.recoverMediaError();
          return;
        }
        onFatal(`${data.type}: ${data.details}`);
      });
      hls.loadSource(url);
      hls.attachMedia(video);
      return { engine: "hls.js", destroy: () => hls.destroy() };
    }
  }
  if (video.canPlayType("application/vnd.apple.mpegurl")) {
    const onError = () => onFatal(`media error ${video.error?.code ?? "?"}`);
    video.addEventListener("error", onError);
    video.src = url;
    return {
      engine: "native",
      destroy: () => {
        video.removeEventListener("error", onError);
        video.removeAttribute("src");
        video.load();
      },
    };
  }
  throw new StreamError(0, { code: "unsupported", message: "This browser cannot play HLS video." });
}

/**
 * Is the room's live HLS playlist there, and live? The server keeps the last stream's
 * playlist after it ended, closed with `#EXT-X-ENDLIST`: that is no stream either.
 * @param {string} url
 * @returns {Promise<void>} rejects with the server's {@link StreamError} (404 when
 *   there is no live stream)
 */
async function probeLive(url) {
  let res;
  try {
    res = await fetch(url, { cache: "no-store" });
  } catch {
    throw new StreamError(0, { code: "disconnected", message: "The server cannot be reached." });
  }
  if (res.ok) {
    if (!/^#EXT-X-ENDLIST/m.test(await res.text())) return;
    throw new StreamError(404, { code: "not_found", message: "the stream has ended" });
  }
  const data = await res.json().catch(() => null);
  throw new StreamError(res.status, data?.error ?? { message: `${res.status} ${res.statusText}` });
}

// -- watching (WHEP, HLS) ----------------------------------------------------------

/**
 * `connecting`: trying; `playing`: frames are shown (detail `via`: `webrtc` or
 * `hls`, and `codec` for WebRTC); `waiting`: the host is not live (nothing to play;
 * detail `retryMs`, 0 when it stopped trying); `error`: the video cannot play
 * (detail `message`; retried after `retryMs`, or never when `retryMs` is 0); `idle`:
 * before {@link LivePlayer#start} and after {@link LivePlayer#stop}.
 * @typedef {"idle" | "connecting" | "playing" | "waiting" | "error"} PlayerState
 */

/**
 * Plays a room's live stream in a `<video>`, asking for it only while the room says
 * there is one ({@link LivePlayer#setMedia}, from the snapshot's `media` and the
 * `media.*` events): WebRTC (WHEP) first; HLS (once the room says it is playable) when
 * the server says `over_capacity` with `"fallback": "hls"`, when WebRTC fails (no
 * RTCPeerConnection, no connection, no picture), or when this server process has no
 * publisher (404: the publisher is on another process); a placeholder while the room
 * has no live stream, and once the stream ends. The WHEP
 * session is deleted when the stream ends, on {@link LivePlayer#stop}, and on
 * `pagehide` (a `keepalive` request).
 *
 * For tests and the curious: {@link LivePlayer#stats}.
 */
export class LivePlayer {
  /**
   * @param {HTMLVideoElement} video
   * @param {{room: string, token?: () => (string | null), retry?: () => boolean,
   *   onState: (state: PlayerState, detail: any) => void}} options `token`: sent with
   *   the WHEP offer when there is one; `retry`: whether to keep trying while there is
   *   no stream (false once the show has ended, say; {@link LivePlayer#retryNow} still
   *   tries)
   */
  constructor(video, options) {
    this.video = video;
    this.room = options.room;
    this.token = options.token ?? (() => null);
    this.retry = options.retry ?? (() => true);
    this.onState = options.onState;
    /** @type {PlayerState} */
    this.state = "idle";
    /** @type {{via: string, engine: string, codec: string, frames: number, attempts: number,
     *   fallbacks: number, ends: number, lastError: string}} */
    this.stats = {
      via: "", engine: "", codec: "", frames: 0, attempts: 0, fallbacks: 0, ends: 0, lastError: "",
    };
    this._gen = 0;
    this._retries = 0;
    this._retryTimer = 0;
    this._lastFrame = 0;
    /** @type {RTCPeerConnection | null} */
    this._pc = null;
    /** @type {string | null} */
    this._whep = null;
    /** @type {HlsPlayback | null} */
    this._hls = null;
    /** @type {{live: boolean, whep: boolean, hls: boolean} | null} the room's word */
    this.media = null;
    this._countFrames();
    video.addEventListener("ended", () => this._ended("the stream ended"));
    document.addEventListener("visibilitychange", () => { this._lastFrame = performance.now(); });
    window.addEventListener("pagehide", () => this.stop({ keepalive: true }));
    setInterval(() => this._watch(), 1000);
  }

  /** Start playing (or trying to, once the room says there is a stream). */
  start() {
    if (this.state === "idle") this._attempt();
  }

  /**
   * What the room says of its video (the snapshot's `media`, a `media.*` event): play
   * when it goes live or becomes playable over HLS, stop when it ends.
   * @param {{live: boolean, whep: boolean, hls: boolean}} media
   */
  setMedia(media) {
    const before = this.media;
    this.media = media;
    if (this.state === "idle") return;
    if (!media.live) {
      if (this.state === "playing" || this.state === "connecting") {
        this._ended("the host stopped the video");
      } else {
        clearTimeout(this._retryTimer); // no retries while there is nothing to ask for
        this._retryTimer = 0;
        if (this.state === "error") this._wait(++this._gen);
      }
      return;
    }
    const news = !before?.live || (media.hls && !before.hls);
    if (news && this.state !== "playing") this.retryNow();
  }

  /** Try again now if waiting (the room's events say the show started, say). */
  retryNow() {
    if (this.state === "waiting" || this.state === "error") {
      clearTimeout(this._retryTimer);
      this._retries = 0;
      this._attempt();
    }
  }

  /**
   * Stop playing and end the WebRTC session on the server.
   * @param {{keepalive?: boolean}} [options]
   */
  stop(options = {}) {
    clearTimeout(this._retryTimer);
    this._gen += 1;
    this._teardown(options.keepalive);
    this.state = "idle";
  }

  async _attempt() {
    const gen = ++this._gen;
    this._teardown();
    const media = this.media;
    if (!media?.live) return this._wait(gen); // nothing to ask for until the room says
    this.stats.attempts += 1;
    this._set("connecting", {});
    let err = null;
    if (media.whep && typeof RTCPeerConnection === "function") {
      try {
        await this._webrtc(gen);
        return;
      } catch (e) {
        err = e;
      }
      if (gen !== this._gen) return;
      this._teardown();
      if (err?.status === 403) return this._fail(err.message, 0);
      // 404: nobody publishes, or (several server processes) the publisher is on
      // another one: HLS, served by every process, says which.
      if (err?.status !== 404) this.stats.fallbacks += 1;
      this.stats.lastError = `${err?.code}: ${err?.message}`;
    }
    if (!this.media?.hls) {
      // not playable over HLS yet: its media.updated event tries again
      if (err?.status === 404 || !err) return this._wait(gen, false);
      return this._fail("The video cannot be played right now.", this._nextDelay());
    }
    try {
      await this._playHls(gen);
    } catch (e) {
      if (gen !== this._gen) return;
      this._teardown();
      if (e?.status === 404) return this._wait(gen);
      this.stats.lastError = `${e?.code}: ${e?.message}`;
      this._fail(e?.code === "unsupported" ? e.message : "The video cannot be played right now.",
        this._nextDelay());
    }
  }

  /** @param {number} gen */
  async _webrtc(gen) {
    const pc = (this._pc = new RTCPeerConnection());
    const video = pc.addTransceiver("video", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" });
    const media = new MediaStream();
    pc.addEventListener("track", (e) => media.addTrack(e.track));
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    if (gen !== this._gen) return;
    const url = `/api/rooms/${encodeURIComponent(this.room)}/whep`;
    const { answer, location } = await postOffer(url, pc.localDescription?.sdp ?? "", this.token());
    if (gen !== this._gen) {
      // Given up meanwhile (pc is closed already): end the session the server just made.
      if (location) endSession(location, this.token());
      return;
    }
    this._whep = location;
    await pc.setRemoteDescription({ type: "answer", sdp: answer });
    this.video.srcObject = media;
    await connected(pc, CONNECT_TIMEOUT_MS);
    if (gen !== this._gen) return;
    const hasVideo = video.currentDirection === "recvonly";
    if (hasVideo) await this._firstFrame(gen);
    if (gen !== this._gen) return;
    // The server closes the connection when the publisher leaves: Chrome's DTLS
    // transport says "closed" at once, its connection state only "disconnected" and
    // seconds later.
    const over = (/** @type {string} */ why) => {
      if (gen === this._gen) this._ended(why);
    };
    pc.addEventListener("connectionstatechange", () => {
      if (["failed", "closed"].includes(pc.connectionState)) over(`connection ${pc.connectionState}`);
    });
    const dtls = pc.getTransceivers()[0]?.receiver.transport;
    dtls?.addEventListener("statechange", () => {
      if (dtls.state === "closed" || dtls.state === "failed") over(`DTLS ${dtls.state}`);
    });
    const codec = codecLabel(sdpCodecs(answer, hasVideo ? "video" : "audio")[0]);
    this.stats.via = "webrtc";
    this.stats.engine = "webrtc";
    this.stats.codec = codec;
    this._retries = 0;
    this._set("playing", { via: "webrtc", codec });
  }

  /** @param {number} gen */
  async _playHls(gen) {
    const url = `/hls/${encodeURIComponent(this.room)}/live.m3u8`;
    await probeLive(url);
    if (gen !== this._gen) return;
    this.video.srcObject = null;
    const playback = await playHls(this.video, url, {
      live: true,
      onFatal: (why) => {
        if (gen === this._gen) this._ended(`HLS: ${why}`);
      },
    });
    if (gen !== this._gen) {
      playback.destroy();
      return;
    }
    this._hls = playback;
    this.video.play().catch(() => {}); // muted: allowed; a refusal shows in the state
    await this._firstFrame(gen);
    if (gen !== this._gen) return;
    this.stats.via = "hls";
    this.stats.engine = playback.engine;
    this.stats.codec = "";
    this._retries = 0;
    this._set("playing", { via: "hls" });
  }

  /**
   * Until the video shows a frame (or plays), or rejects after a while.
   * @param {number} gen
   */
  _firstFrame(gen) {
    const start = this.stats.frames;
    const limit = performance.now() + CONNECT_TIMEOUT_MS * 2;
    return new Promise((resolve, reject) => {
      const check = () => {
        if (gen !== this._gen || this.stats.frames > start) resolve(undefined);
        else if (performance.now() > limit) {
          reject(new StreamError(0, { code: "no_picture", message: "no picture came" }));
        } else setTimeout(check, 100);
      };
      check();
    });
  }

  /** Count presented frames (the stall watchdog's clock, and the tests'). */
  _countFrames() {
    const video = /** @type {any} */ (this.video);
    const seen = () => {
      this.stats.frames += 1;
      this._lastFrame = performance.now();
    };
    if (typeof video.requestVideoFrameCallback === "function") {
      const step = () => {
        seen();
        video.requestVideoFrameCallback(step);
      };
      video.requestVideoFrameCallback(step);
    } else {
      this.video.addEventListener("timeupdate", seen);
    }
  }

  /** Once a second: a playing stream whose frames stopped is over. */
  _watch() {
    if (this.state !== "playing" || document.hidden) return;
    const via = this.stats.via === "hls" ? "hls" : "webrtc";
    if (this._pc && this._pc.getTransceivers()[0]?.currentDirection !== "recvonly") return;
    if (performance.now() - this._lastFrame > STALL_MS[via]) this._ended("no new frame");
  }

  /** @param {string} why the stream ended (or broke): placeholder, then try again */
  _ended(why) {
    if (this.state !== "playing" && this.state !== "connecting") return;
    this.stats.ends += 1;
    this.stats.lastError = why;
    const gen = ++this._gen;
    this._teardown();
    this._wait(gen);
  }

  /**
   * No stream now: say so, and try again later while the room says it is live (its
   * next `media.*` event tries anyway).
   * @param {number} gen
   * @param {boolean} [again] false: only the room's next event tries again
   */
  _wait(gen, again = true) {
    if (gen !== this._gen) return;
    this._retryTimer = 0;
    const delay = again && this.media?.live && this.retry() ? this._nextDelay() : 0;
    this._set("waiting", { retryMs: delay });
    if (delay) this._retryTimer = window.setTimeout(() => this._attempt(), delay);
  }

  /**
   * @param {string} message
   * @param {number} retryMs 0: never
   */
  _fail(message, retryMs) {
    this._set("error", { message, retryMs });
    if (retryMs) this._retryTimer = window.setTimeout(() => this._attempt(), retryMs);
  }

  _nextDelay() {
    const delay = RETRY_MS[Math.min(this._retries, RETRY_MS.length - 1)];
    this._retries += 1;
    return Math.round(delay * (0.8 + Math.random() * 0.4));
  }

  /** @param {boolean} [keepalive] */
  _teardown(keepalive = false) {
    if (this._whep) endSession(this._whep, this.token(), keepalive);
    this._whep = null;
    this._pc?.close();
    this._pc = null;
    this._hls?.destroy();
    this._hls = null;
    if (this.video.srcObject) this.video.srcObject = null;
  }

  /** @param {PlayerState} state @param {any} detail */
  _set(state, detail) {
    this.state = state;
    this.onState(state, detail);
  }
}
