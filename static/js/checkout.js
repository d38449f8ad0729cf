/**
 * The sandbox shop's checkout page (`/sandbox/checkout/{order}`): Pay and Cancel.
 *
 * Each button posts with the buyer's token in `Authorization` (the viewer page's
 * sign-in: its Pay link opens this page with the tab's `sessionStorage` copied), which
 * a form or a page of another site cannot send; the server lets only the order's buyer
 * (or an admin) pay or cancel. Without a sign-in in this tab the buttons stay off and
 * the page says where to pay from.
 *
 * @module checkout
 */

const TOKEN_KEY = "livecommerce.watch.token";

const main = /** @type {HTMLElement} */ (document.querySelector("main.checkout"));
const note = /** @type {HTMLElement} */ (document.getElementById("checkout-note"));
const status = /** @type {HTMLElement} */ (document.getElementById("status"));
const buttons = /** @type {HTMLButtonElement[]} */ (
  ["pay", "cancel"].map((id) => document.getElementById(id)).filter(Boolean)
);
const token = sessionStorage.getItem(TOKEN_KEY);

/**
 * @param {"pay" | "cancel"} action
 */
async function act(action) {
  for (const b of buttons) b.disabled = true;
  note.textContent = action === "pay" ? "Paying…" : "Cancelling…";
  const url = `/sandbox/checkout/${encodeURIComponent(main.dataset.order ?? "")}/${action}`;
  try {
    const res = await fetch(url, { method: "POST", headers: { Authorization: `Bearer ${token}` } });
    const data = await res.json().catch(() => null);
    if (!res.ok) throw new Error(data?.error?.message ?? `${res.status} ${res.statusText}`);
    const done = data?.order?.status ?? (action === "pay" ? "paid" : "cancelled");
    status.textContent = done;
    note.textContent = done === "paid" ? "Paid. Thank you!" : `The order is ${done}.`;
    for (const b of buttons) b.hidden = true;
  } catch (err) {
    note.textContent = `That did not work: ${/** @type {Error} */ (err).message}`;
    for (const b of buttons) b.disabled = false;
  }
}

if (buttons.length && token) {
  for (const b of buttons) {
    b.disabled = false;
    b.addEventListener("click", () => act(b.id === "pay" ? "pay" : "cancel"));
  }
} else if (buttons.length) {
  note.textContent = "Open this page with the Pay button of the show you ordered in: "
    + "only the buyer can pay or cancel.";
}
