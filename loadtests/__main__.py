"""``python -m loadtests <scenario> [options]``: the one entry point of the load tests.

Each scenario has ``--help``. The room scenarios (:mod:`loadtests.scenarios`) start a
server of their own unless given ``--url``; the others keep their own tools' options.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Final

from loadtests.scenarios import HELP, RUNNERS


def _room(name: str) -> Callable[[Sequence[str]], int]:
    def run(argv: Sequence[str]) -> int:
        from loadtests import scenarios

        return scenarios.main(name, argv)

    return run


def _flash_sale(argv: Sequence[str]) -> int:
    from loadtests import scenarios

    return scenarios.flash_sale_main(argv)


def _fanout(argv: Sequence[str]) -> int:
    from loadtests import fanout

    return fanout.main(argv)


def _bridge(argv: Sequence[str]) -> int:
    from loadtests import bridge

    return bridge.main(argv)


def _media(argv: Sequence[str]) -> int:
    from loadtests import media

    return media.main(argv)


def _promotion(name: str) -> Callable[[Sequence[str]], int]:
    def run(argv: Sequence[str]) -> int:
        from loadtests import promotions

        return promotions.main(name, argv)

    return run


def _plot(argv: Sequence[str]) -> int:
    from loadtests import plot

    return plot.main(argv)


def _client_cost(argv: Sequence[str]) -> int:
    from loadtests import clientcost

    return clientcost.main(argv)


COMMANDS: Final[dict[str, tuple[Callable[[Sequence[str]], int], str]]] = {
    **{name: (_room(name), HELP[name]) for name in RUNNERS},
    "flash-sale": (_flash_sale, "a burst of order attempts at one sale (needs --url)"),
    "plot": (_plot, "p99 latency and server CPU against viewers, from sweep JSON, as PNG"),
    "client-cost": (_client_cost, "what one connection costs the generator, ours vs aiohttp"),
    "fanout": (_fanout, "the first fan-out tool (aiohttp clients; the M and R rows)"),
    "bridge": (_bridge, "the order bridge's delivery rate"),
    "media": (_media, "live video: server CPU per WebRTC viewer, latency, HLS"),
    "coupon-claims": (
        _promotion("coupon-claims"),
        "a burst of coupon claims at one live coupon (own server)",
    ),
    "bids": (_promotion("bids"), "bidders on one live auction lot (own server)"),
    "group-fill": (
        _promotion("group-fill"),
        "from a group's last join to every member's order (own server)",
    ),
}


def usage() -> str:
    rows = "\n".join(f"  {name:<16} {text}" for name, (_, text) in COMMANDS.items())
    return (
        "usage: python -m loadtests <scenario> [options]   (each has --help)\n\n"
        f"scenarios:\n{rows}\n"
    )


def main(argv: Sequence[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    command = COMMANDS.get(argv[0])
    if command is None:
        print(f"python -m loadtests: unknown scenario {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    return command[0](argv[1:])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
