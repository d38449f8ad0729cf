/**
 * The show's report (`GET /api/rooms/{room}/report`), for its staff: totals and
 * rates, each product with its clip, the minute-by-minute chart and table, and the
 * CSV. Signed in with the studio's (or the console's) sign-in of this tab, which the
 * studio's link passes on; a demo server offers the demo host's.
 * @module report
 */

import { count, currencyOf, formatDuration, Money, timeOfDay } from "/js/format.js";
import { explain, Session } from "/js/session.js";
import { byId, download, minuteChart, note } from "/js/ui.js";

const params = new URLSearchParams(location.search);
const ROOM = params.get("room") || "demo";
const money = new Money(currencyOf(params.get("currency")));
const studio = new Session("livecommerce.studio.token");
const session = studio.token ? studio : new Session("livecommerce.console.token");
const el = {
  title: byId("title"), status: byId("show-status"), note: byId("note"), totals: byId("totals"),
  chart: byId("chart"), products: byId("products"), minutes: byId("minutes"),
  ab: byId("ab"), abRows: byId("ab-rows"),
  signIn: /** @type {HTMLButtonElement} */ (byId("sign-in")),
  csv: /** @type {HTMLAnchorElement} */ (byId("csv")),
};

/** @param {number | null} rate @returns {string} */
const percent = (rate) => (rate === null ? "–" : `${(rate * 100).toFixed(1)} %`);

/** @param {HTMLElement} row @param {(string | Node)[]} cells */
function cells(row, ...cells) {
  for (const c of cells) {
    const td = document.createElement("td");
    td.append(c);
    row.append(td);
  }
}

/** @param {any} rep */
function render(rep) {
  el.title.textContent = `${rep.title}: report`;
  el.status.textContent = rep.status === "live" ? "Live" : "Report";
  el.status.dataset.status = rep.status;
  const t = rep.totals;
  const r = rep.rates;
  /** @type {[string, string][]} */
  const figures = [
    ["Viewers now", count(t.viewers_now)], ["Peak viewers", count(t.peak_viewers)],
    ["Unique viewers", count(t.unique_viewers)], ["Views", count(t.views)],
    ["Average watch", t.avg_watch_s === null ? "–" : formatDuration(t.avg_watch_s * 1000)],
    ["Chats", count(t.chats)], ["Likes", count(t.likes)], ["Product clicks", count(t.clicks)],
    ["Orders", count(t.orders)], ["Paid orders", count(t.paid_orders)],
    ["GMV", money.format(t.gmv)], ["Paid GMV", money.format(t.paid_gmv)],
    ["Buyers", count(t.buyers)], ["First-time buyers", count(t.first_time_buyers)],
    ["Conversion", percent(r.conversion)], ["Click to order", percent(r.click_to_order)],
    ["GMV per 1,000 views", r.gmv_per_1000_views === null ? "–" : money.format(Math.round(r.gmv_per_1000_views))],
    ["Coupons claimed / spent", `${count(t.coupon_claims)} / ${count(t.coupons_spent)}`],
    ["Giveaway entries", count(t.giveaway_entries)],
    ["Groups filled / opened", `${count(t.groups_filled)} / ${count(t.groups_opened)}`],
    ["Auction bids", count(t.auction_bids)],
  ];
  el.totals.replaceChildren(...figures.map(([name, value]) => {
    const div = document.createElement("div");
    div.className = "stat";
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = value;
    dd.dataset.figure = name;
    div.append(dt, dd);
    return div;
  }));
  el.chart.replaceChildren(minuteChart(rep.series, { width: 640, height: 140 }));
  el.products.replaceChildren(...rep.products.map((/** @type {any} */ p) => {
    const tr = document.createElement("tr");
    const clip = document.createElement("span");
    if (p.clip) {
      const a = document.createElement("a");
      a.href = `/clips.html#${encodeURIComponent(p.sku)}`;
      a.textContent = "Explanation clip";
      clip.append(a);
    } else {
      clip.textContent = "–";
    }
    cells(tr, p.title, count(p.clicks), count(p.orders), money.format(p.gmv),
      money.format(p.paid_gmv), count(p.units_sold), count(p.chats), count(p.likes), clip);
    return tr;
  }));
  el.ab.hidden = !rep.ab_tests?.length;
  el.abRows.replaceChildren(...(rep.ab_tests ?? []).flatMap((/** @type {any} */ t) =>
    Object.entries(t.arms).map(([group, /** @type {any} */ a]) => {
      const tr = document.createElement("tr");
      const ci = a.ci95 ? ` (${percent(a.ci95[0])} to ${percent(a.ci95[1])})` : "";
      cells(tr, t.title, group.toUpperCase(), money.format(a.price), count(a.viewers),
        count(a.buyers), `${percent(a.conversion)}${ci}`);
      return tr;
    })));
  el.minutes.replaceChildren(...rep.series.map((/** @type {any} */ m) => {
    const tr = document.createElement("tr");
    cells(tr, timeOfDay(m.minute), count(m.viewers), count(m.chats), count(m.likes),
      count(m.orders), money.format(m.gmv));
    return tr;
  }));
}

async function load() {
  if (!session.token) {
    note(el.note, "Sign in from the studio or the console, and open the report from there.",
      "info", 0);
    el.signIn.hidden = false;
    return;
  }
  try {
    const rep = await session.api(`/api/rooms/${encodeURIComponent(ROOM)}/report`);
    render(rep);
    el.csv.hidden = false;
    note(el.note, `As of ${timeOfDay(rep.at)}.`, "ok", 0);
  } catch (err) {
    note(el.note, explain(err), "error", 0);
  }
}

el.signIn.addEventListener("click", async () => {
  try {
    await studio.demo("host");
    el.signIn.hidden = true;
    window.location.reload();
  } catch (err) {
    note(el.note, explain(err), "error", 0);
  }
});
el.csv.addEventListener("click", async (e) => {
  e.preventDefault();
  const path = `/api/rooms/${encodeURIComponent(ROOM)}/report?format=csv`;
  const status = await download(path, session.token, `${ROOM}-report.csv`);
  if (status >= 300) note(el.note, `The CSV could not be made (${status}).`, "error", 0);
});

load();
