"""``python -m loadtests plot FILE... -o PNG``: p99 latency and server CPU against viewers.

Reads the JSON the room scenarios write (a sweep's steps, or any other results that
have viewers, latency and server CPU) and draws two panels sharing the viewers axis:
chat delivery latency (p99, and p50 dashed) and the server's CPU (all its processes,
% of one core). One line per file, labelled with the file's name (or ``--label``). Needs
matplotlib (``pip install -e '.[loadtest]'``); nothing else in the load tests does.
"""

from __future__ import annotations

import argparse
import importlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Series:
    """One file's points, sorted by viewers."""

    label: str
    viewers: list[int]
    p50_ms: list[float | None]
    p99_ms: list[float | None]
    cpu_pct: list[float | None]
    note: str


def series(doc: dict[str, Any], label: str) -> Series:
    """The points of one scenario document (results without latency are left out).

    Raises:
        ValueError: it is not a load-test document with results.
    """
    results = doc.get("results")
    if doc.get("tool") != "loadtests" or not isinstance(results, list):
        raise ValueError(f"{label}: not a JSON document of python -m loadtests")
    points = sorted(
        (
            (
                int(r["viewers"]),
                r["latency_ms"]["p50"],
                r["latency_ms"]["p99"],
                r["server"]["cpu_pct_total"],
            )
            for r in results
            if r.get("latency_ms", {}).get("p99") is not None
        ),
        key=lambda p: p[0],
    )
    if not points:
        raise ValueError(f"{label}: no result with a p99 latency")
    server = doc.get("server", {})
    load = results[0].get("load", {})
    note = (
        f"{server.get('backend') or 'given server'}, {len(server.get('pids', []))} process(es); "
        f"{load.get('chats_per_s_target', 0):g} chats/s, "
        f"{load.get('like_taps_per_s_target', 0):g} taps/s; {doc.get('date', '')}"
    )
    return Series(
        label=label,
        viewers=[p[0] for p in points],
        p50_ms=[p[1] for p in points],
        p99_ms=[p[2] for p in points],
        cpu_pct=[p[3] for p in points],
        note=note,
    )


def draw(all_series: Sequence[Series], out: str, title: str) -> None:
    """Write the PNG (matplotlib's Agg backend: no display needed)."""
    matplotlib: Any = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    plt: Any = importlib.import_module("matplotlib.pyplot")
    fig, (lat, cpu) = plt.subplots(2, 1, sharex=True, figsize=(8, 7), dpi=110)
    for s in all_series:
        line = lat.plot(s.viewers, s.p99_ms, marker="o", label=f"{s.label}: p99")[0]
        lat.plot(
            s.viewers,
            s.p50_ms,
            marker=".",
            linestyle="--",
            color=line.get_color(),
            label=f"{s.label}: p50",
        )
        cpu.plot(s.viewers, s.cpu_pct, marker="o", color=line.get_color(), label=s.label)
    lat.set_ylabel("chat delivery latency (ms)")
    lat.set_ylim(bottom=0)
    lat.grid(True, alpha=0.3)
    lat.legend(fontsize="small")
    cpu.set_ylabel("server CPU (% of one core, all processes)")
    cpu.set_xlabel("viewers in the room")
    top = max((v for s in all_series for v in s.cpu_pct if v is not None), default=0.0)
    cpu.set_ylim(0, max(110.0, top * 1.1))
    cpu.grid(True, alpha=0.3)
    cpu.axhline(100, color="grey", linewidth=0.8, linestyle=":")  # one core
    if all(v > 0 for s in all_series for v in s.viewers):
        cpu.set_xscale("log")
    fig.suptitle(title)
    fig.text(0.01, 0.005, " | ".join(s.note for s in all_series), fontsize="x-small")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(
        prog="python -m loadtests plot",
        description="p99 latency and server CPU against viewers, from the scenarios' JSON.",
    )
    p.add_argument("files", nargs="+", help="JSON written by python -m loadtests sweep")
    p.add_argument("-o", "--output", default="docs/img/sweep.png", help="the PNG to write")
    p.add_argument("--label", action="append", default=[], help="a label per file, in order")
    p.add_argument("--title", default="One room: latency and server CPU against viewers")
    a = p.parse_args(argv)
    if a.label and len(a.label) != len(a.files):
        p.error("give one --label per file, or none")
    found: list[Series] = []
    for i, name in enumerate(a.files):
        try:
            doc = json.loads(Path(name).read_text())
            found.append(series(doc, a.label[i] if a.label else Path(name).stem))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            p.error(f"{name}: {exc}")
    try:
        draw(found, a.output, a.title)
    except ModuleNotFoundError:
        p.error("matplotlib is missing: pip install -e '.[loadtest]'")
    print(f"wrote {a.output}")
    return 0
