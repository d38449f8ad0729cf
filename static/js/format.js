/**
 * Formatting shared by the viewer page (watch) and the staff pages (studio,
 * console): prices, durations, counts, times of day, and an estimate of the
 * server's clock for countdowns.
 *
 * Prices travel as integers in the smallest currency unit (cents for USD); only
 * these helpers convert to and from what a person reads or types.
 *
 * @module format
 */

/**
 * @param {string | null | undefined} code an ISO 4217 code from the page's URL
 * @returns {string} `code` when it looks like one, else `USD`
 */
export function currencyOf(code) {
  return /^[A-Z]{3}$/.test(code ?? "") ? /** @type {string} */ (code) : "USD";
}

/** Money in one currency: display and parsing. */
export class Money {
  /** @param {string} currency ISO 4217 code */
  constructor(currency) {
    this.currency = currency;
    this.format_ = new Intl.NumberFormat(undefined, { style: "currency", currency });
    /** Digits of the smallest unit: 2 for USD and EUR, 0 for JPY. */
    this.digits = new Intl.NumberFormat("en", { style: "currency", currency })
      .resolvedOptions().maximumFractionDigits ?? 2;
    this.scale = 10 ** this.digits;
  }

  /** @param {number} units an amount in the smallest unit @returns {string} */
  format(units) {
    return this.format_.format(units / this.scale);
  }

  /**
   * An amount typed in currency units ("12", "12.5", "12,50", "$1,299.00") as an
   * integer in the smallest unit, computed without floating point.
   * @param {string} text
   * @returns {number | null} null when it is not a valid non-negative amount
   */
  parse(text) {
    let t = String(text).trim().replace(/[\s$€£¥]/g, "");
    // "1,299.00": commas group thousands; "12,50": a decimal comma.
    if (/^\d{1,3}(,\d{3})+(\.\d*)?$/.test(t)) t = t.replace(/,/g, "");
    else t = t.replace(",", ".");
    const m = /^(\d+)(?:\.(\d*))?$/.exec(t);
    if (!m) return null;
    const frac = m[2] ?? "";
    if (frac.length > this.digits) return null;
    const units = Number(m[1]) * this.scale + Number(frac.padEnd(this.digits, "0") || 0);
    return Number.isSafeInteger(units) ? units : null;
  }

  /** @param {number} units @returns {string} for an input field: "12.50" */
  toInput(units) {
    return (units / this.scale).toFixed(this.digits);
  }
}

/**
 * @param {number} ms a duration
 * @returns {string} `m:ss`, or `h:mm:ss` from an hour on
 */
export function formatDuration(ms) {
  const total = Math.max(0, Math.ceil(ms / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

/**
 * @param {number} seconds
 * @returns {string} "30 s", "10 min", "1 h", "24 h"
 */
export function formatSeconds(seconds) {
  if (seconds % 3600 === 0) return `${seconds / 3600} h`;
  if (seconds % 60 === 0) return `${seconds / 60} min`;
  return `${seconds} s`;
}

const compactFormat = new Intl.NumberFormat(undefined, { notation: "compact" });
const plainFormat = new Intl.NumberFormat();

/** @param {number} n @returns {string} "987", "12,345" or "1.2M" */
export function count(n) {
  return n < 1_000_000 ? plainFormat.format(n) : compactFormat.format(n);
}

const timeFormat = new Intl.DateTimeFormat(undefined, {
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
});

/** @param {number} ms unix ms @returns {string} the local time of day */
export function timeOfDay(ms) {
  return timeFormat.format(new Date(ms));
}

/**
 * The server's clock, estimated from the `ts` of events: `ts` was taken before the
 * event travelled, so the largest `ts - now` seen recently is the best estimate of
 * the offset. Countdowns use it; states always come from the server.
 */
export const clock = {
  offset: 0,
  /** @type {number[]} */
  samples: [],
  /** @param {number} ts an event's server time, unix ms */
  observe(ts) {
    this.samples.push(ts - Date.now());
    if (this.samples.length > 20) this.samples.shift();
    this.offset = Math.max(...this.samples);
  },
  /** @returns {number} the server's time now, unix ms (estimated) */
  now() {
    return Date.now() + this.offset;
  },
};
