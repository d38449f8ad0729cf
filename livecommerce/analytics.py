"""A show's figures: what each event adds to the room's counters. Pure.

The counters are one hash per room (``stats``): a figure in all, and the same figure
per product (``<figure>:<sku>``). The memory engine adds these dicts; the Redis engine
adds the same in its scripts (``backends/redis_inventory.py``'s ``add``, and the
promotions' scripts), in the same step as the change they count, so figures never
disagree with the orders and promotions they count, whatever the processes.

Figures: ``orders`` (holds placed), ``gmv`` (their totals after discounts, less the
holds that expired or were cancelled), ``paid_orders``, ``paid_gmv``, ``units_sold``,
``revenue`` (paid, less refunds), ``coupons_spent`` (less those given back),
``coupon_claims``, ``giveaway_entries``, ``groups_opened``, ``groups_filled``,
``auction_bids``, and, counted by the room service and the hub, ``chats``, ``likes``,
``clicks`` (a viewer opening the product card), ``joins``, ``watch_ms`` (time
watched, added when a viewer leaves) and ``peak_viewers``.
"""

from __future__ import annotations

import csv
import io
import math
from datetime import UTC, datetime
from typing import Any

from livecommerce.inventory.rules import Order


def per_sku(figure: str, sku: str, n: int) -> dict[str, int]:
    """``n`` more of ``figure``, in all and for ``sku`` (nothing for 0)."""
    return {figure: n, f"{figure}:{sku}": n} if n else {}


def held(order: Order) -> dict[str, int]:
    """A hold placed (an order, or a promotion's grant)."""
    total = order.qty * order.price - order.discount
    out = {**per_sku("orders", order.sku, 1), **per_sku("gmv", order.sku, total)}
    if order.coupon is not None:
        out |= per_sku("coupons_spent", order.sku, 1)
    return out


def released(order: Order) -> dict[str, int]:
    """A hold that expired or was cancelled: its total out of the GMV, its coupon back."""
    out = per_sku("gmv", order.sku, -(order.qty * order.price - order.discount))
    if order.coupon is not None:
        out |= per_sku("coupons_spent", order.sku, -1)
    return out


def sold(order: Order, sign: int) -> dict[str, int]:
    """A payment (``sign`` 1) or the refund of one (-1)."""
    return {
        **per_sku("units_sold", order.sku, sign * order.qty),
        **per_sku("revenue", order.sku, sign * order.qty * order.price),
        **per_sku("paid_orders", order.sku, sign),
        **per_sku("paid_gmv", order.sku, sign * (order.qty * order.price - order.discount)),
    }


PRODUCT_FIGURES = (
    "peak_viewers", "chats", "likes", "clicks", "orders", "gmv", "paid_orders", "paid_gmv",
    "units_sold", "revenue", "coupons_spent", "groups_opened", "groups_filled",
)  # fmt: skip
"""Per product (``<figure>:<sku>``); chats, likes, clicks and the peak count while it
was pinned."""
TOTAL_FIGURES = (
    "chats", "likes", "clicks", "orders", "gmv", "paid_orders", "paid_gmv", "units_sold",
    "revenue", "buyers", "first_time_buyers", "coupon_claims", "coupons_spent",
    "giveaway_entries", "groups_opened", "groups_filled", "auction_bids",
)  # fmt: skip
SERIES_FIGURES = ("chats", "likes", "orders", "gmv", "paid_orders", "paid_gmv")
"""What the minute-by-minute series gives per minute (the viewers: the most seen)."""


def _ratio(a: int, b: int, scale: int = 1) -> float | None:
    return round(a * scale / b, 4) if b else None


def report(
    *,
    figures: dict[str, int],
    likes: int,
    viewers_now: int,
    unique_viewers: int,
    minutes: dict[int, dict[str, int]],
    products: list[tuple[str, str]],
) -> dict[str, Any]:
    """A show's report from its counted figures: totals, the derived rates, each
    product's figures and the minute-by-minute series (``viewers`` the most seen in
    the minute, the rest what the minute added)."""
    f = dict(figures)
    f["likes"] = likes
    views = f.get("joins", 0)
    counted = {name: f.get(name, 0) for name in TOTAL_FIGURES}
    totals: dict[str, Any] = {
        "viewers_now": viewers_now,
        "peak_viewers": f.get("peak_viewers", 0),
        "unique_viewers": unique_viewers,
        "views": views,
        "avg_watch_s": _ratio(f.get("watch_ms", 0), unique_viewers * 1000),
        **counted,
    }
    rates = {
        "conversion": _ratio(counted["buyers"], unique_viewers),
        "click_to_order": _ratio(counted["orders"], counted["clicks"]),
        "gmv_per_1000_views": _ratio(counted["gmv"], views, 1000),
        "group_fill_rate": _ratio(counted["groups_filled"], counted["groups_opened"]),
    }
    per_product = [
        {"sku": sku, "title": title, **{n: f.get(f"{n}:{sku}", 0) for n in PRODUCT_FIGURES}}
        for sku, title in products
    ]
    series, before = [], dict.fromkeys(SERIES_FIGURES, 0)
    for minute in sorted(minutes):
        m = minutes[minute]
        point: dict[str, Any] = {"minute": minute * 60_000, "viewers": m.get("viewers", 0)}
        for name in SERIES_FIGURES:
            point[name] = m.get(name, 0) - before[name]
            before[name] = m.get(name, 0)
        series.append(point)
    return {"totals": totals, "rates": rates, "products": per_product, "series": series}


def wilson(successes: int, trials: int, z: float = 1.96) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion (95 % by default), or None for no
    trials: sound at small counts and near 0 or 1, where the normal one is not."""
    if not trials:
        return None
    p, n = successes / trials, trials
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)


def ab_test(
    *, sale_id: str, sku: str, title: str, prices: dict[str, int],
    counts: dict[str, tuple[int, int]], orders: dict[str, int],
) -> dict[str, Any]:  # fmt: skip
    """One A/B test of a sale's price: per arm its price, who saw it, who ordered, the
    conversion and its 95 % interval, and the orders."""
    arms = {}
    for group, (seen, ordered) in counts.items():
        arms[group] = {
            "price": prices[group],
            "viewers": seen,
            "buyers": ordered,
            "orders": orders.get(group, 0),
            "conversion": _ratio(ordered, seen),
            "ci95": wilson(min(ordered, seen), seen),
        }
    return {"sale": sale_id, "sku": sku, "title": title, "arms": arms}


def report_csv(rep: dict[str, Any]) -> str:
    """The report as CSV: the totals and rates (``figure,value``), then one row per
    product, then one per minute."""
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["figure", "value"])
    for name, value in {**rep["totals"], **rep["rates"]}.items():
        w.writerow([name, "" if value is None else value])
    w.writerow([])
    w.writerow(["sku", "title", *PRODUCT_FIGURES, "clip"])
    for p in rep["products"]:
        w.writerow([p["sku"], p["title"], *(p[n] for n in PRODUCT_FIGURES), p.get("clip") or ""])
    w.writerow([])
    w.writerow(["minute", "viewers", *SERIES_FIGURES])
    for point in rep["series"]:
        when = datetime.fromtimestamp(point["minute"] / 1000, UTC).isoformat(timespec="minutes")
        w.writerow([when, point["viewers"], *(point[n] for n in SERIES_FIGURES)])
    if rep.get("ab_tests"):
        w.writerow([])
        w.writerow(["sale", "arm", "price", "viewers", "buyers", "orders", "conversion",
                    "ci95_low", "ci95_high"])  # fmt: skip
        for test in rep["ab_tests"]:
            for group, a in test["arms"].items():
                lo, hi = a["ci95"] or ("", "")
                w.writerow([test["sale"], group, a["price"], a["viewers"], a["buyers"],
                            a["orders"], "" if a["conversion"] is None else a["conversion"],
                            lo, hi])  # fmt: skip
    return out.getvalue()
