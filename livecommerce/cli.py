"""The command line: ``livecommerce serve ...`` (also ``python -m livecommerce``).

With ``__main__`` this is the only module that reads argv and the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from livecommerce.config import Retention, Settings
from livecommerce.errors import ConfigError

log = logging.getLogger("livecommerce")

GC_THRESHOLDS = (50_000, 20, 100)
"""Young collections every 50,000 allocations (default 700); a full one after 100
collections of the middle generation (default 10)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="livecommerce", description="Live shopping server.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--host", default=os.environ.get("LIVECOMMERCE_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("LIVECOMMERCE_PORT", "8080")))
    serve.add_argument(
        "--redis-url",
        default=os.environ.get("LIVECOMMERCE_REDIS_URL"),
        help="use Redis (any number of processes): redis://host:port/db, or "
        "redis+cluster://host:port for Redis Cluster (any one node; rediss+cluster:// "
        "over TLS); default: embedded memory",
    )
    serve.add_argument(
        "--secret",
        default=os.environ.get("LIVECOMMERCE_SECRET"),
        help="HS256 secret that signs tokens (or LIVECOMMERCE_SECRET)",
    )
    serve.add_argument(
        "--allowed-origin",
        dest="allowed_origins",
        action="append",
        default=[o for o in os.environ.get("LIVECOMMERCE_ALLOWED_ORIGINS", "").split(",") if o],
        help="an origin (https://shop.example) whose pages may open /ws; repeat for more, "
        "'*' for any (default: only this server's own pages, and apps)",
    )
    serve.add_argument(
        "--header-timeout-s",
        type=float,
        default=15.0,
        help="close a connection that sends no whole request's headers this long after "
        "it opens or after its last answer (default 15)",
    )
    serve.add_argument(
        "--metrics-token",
        default=os.environ.get("LIVECOMMERCE_METRICS_TOKEN"),
        help="GET /metrics needs Authorization: Bearer <this> (default: an admin's token)",
    )
    serve.add_argument(
        "--token-audience",
        default=os.environ.get("LIVECOMMERCE_TOKEN_AUDIENCE"),
        help="refuse tokens whose aud does not name this (default: aud is not checked)",
    )
    serve.add_argument(
        "--token-issuer",
        default=os.environ.get("LIVECOMMERCE_TOKEN_ISSUER"),
        help="refuse tokens whose iss is not this (default: iss is not checked)",
    )
    serve.add_argument(
        "--demo",
        action="store_true",
        help="demo room, demo sign-in for every role, throwaway secret",
    )
    serve.add_argument("--tick-ms", type=int, default=50, help="fan-out tick (default 50)")
    serve.add_argument(
        "--tick-max-ms",
        type=int,
        default=250,
        help="the longest a large room's tick grows (default 250)",
    )
    serve.add_argument(
        "--fanout-share",
        type=float,
        default=0.30,
        help="share of a core a room's fan-out may take per process before its tick "
        "grows (default 0.30)",
    )
    serve.add_argument(
        "--outbound-limit",
        type=int,
        default=512 * 1024,
        help="bytes queued per connection before it is closed with 4009",
    )
    serve.add_argument(
        "--stall-s",
        type=float,
        default=2.5,
        help="close (4009) a client that took less than half of what it was sent over "
        "about this long, twice in a row; 0: off (default 2.5)",
    )
    serve.add_argument(
        "--hold-s", type=int, default=300, help="payment window of a hold, in seconds (default 300)"
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("LIVECOMMERCE_WORKERS", "1")),
        help="server processes sharing the port (SO_REUSEPORT; more than 1 needs Redis)",
    )
    serve.add_argument(
        "--sandbox-shop",
        action="store_true",
        default=os.environ.get("LIVECOMMERCE_SANDBOX_SHOP") == "1",
        help="take orders in the built-in sandbox shop (buyers pay nothing; staging only); "
        "without --demo a server needs this or --order-webhook-url",
    )
    serve.add_argument(
        "--no-bridge",
        dest="bridge",
        action="store_false",
        help="run no order-bridge worker here (run `livecommerce bridge` instead)",
    )
    serve.add_argument(
        "--no-analytics",
        dest="analytics",
        action="store_false",
        help="count no views, unique viewers, watch time, clicks or minute series",
    )
    _order_options(serve)
    _media_options(serve)
    serve.add_argument("--log-level", default=os.environ.get("LIVECOMMERCE_LOG_LEVEL", "INFO"))

    bridge = sub.add_parser("bridge", help="run order-bridge workers apart from the server")
    _store_options(bridge)
    _order_options(bridge)
    bridge.add_argument("--log-level", default=os.environ.get("LIVECOMMERCE_LOG_LEVEL", "INFO"))

    orders = sub.add_parser("orders", help="order tools")
    orders_sub = orders.add_subparsers(dest="orders_command", required=True)
    rec = orders_sub.add_parser(
        "reconcile", help="compare holds with what the order system confirmed"
    )
    _store_options(rec)
    rec.add_argument("--room", action="append", help="only this room (repeat); default: all")
    rec.add_argument(
        "--shop-export",
        help='JSON lines from the order system: {"order_id", "status"} per order it knows',
    )
    rec.add_argument("--log-level", default="WARNING")

    check = sub.add_parser(
        "verify-draw",
        help="check a giveaway's draw from its proof (GET /api/giveaways/{id}/proof)",
    )
    check.add_argument("file", help="the proof's JSON ('-': standard input)")
    check.add_argument(
        "--commitment", help="the commitment announced when the giveaway started (to compare)"
    )
    return parser


def _store_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--redis-url",
        default=os.environ.get("LIVECOMMERCE_REDIS_URL"),
        required="LIVECOMMERCE_REDIS_URL" not in os.environ,
        help="the server's Redis (or LIVECOMMERCE_REDIS_URL); redis+cluster://... for a cluster",
    )
    p.add_argument(
        "--secret",
        default=os.environ.get("LIVECOMMERCE_SECRET"),
        help="the server's token secret (or LIVECOMMERCE_SECRET)",
    )


def _order_options(p: argparse.ArgumentParser) -> None:
    env = os.environ.get
    p.add_argument(
        "--order-webhook-url",
        default=env("LIVECOMMERCE_ORDER_WEBHOOK_URL"),
        help="the order system's webhook (default: the built-in sandbox shop)",
    )
    p.add_argument(
        "--order-webhook-secret",
        default=env("LIVECOMMERCE_ORDER_WEBHOOK_SECRET"),
        help="whsec_... shared with the order system: signs webhooks, verifies callbacks",
    )
    p.add_argument(
        "--order-webhook-max-attempts",
        type=int,
        default=int(env("LIVECOMMERCE_ORDER_WEBHOOK_MAX_ATTEMPTS", "10")),
        help="failed deliveries before an order goes to the dead letters (default 10)",
    )
    p.add_argument("--currency", default=env("LIVECOMMERCE_CURRENCY", "USD"), help="ISO 4217 (USD)")
    p.add_argument(
        "--order-webhook-timeout-s",
        type=float,
        default=float(env("LIVECOMMERCE_ORDER_WEBHOOK_TIMEOUT_S", "10")),
        help="seconds the order system has to answer a delivery (default 10)",
    )
    p.add_argument(
        "--bridge-concurrency",
        type=int,
        default=int(env("LIVECOMMERCE_BRIDGE_CONCURRENCY", "64")),
        help="deliveries in flight per bridge worker (default 64)",
    )
    p.add_argument(
        "--bridge-claim-idle-s",
        type=float,
        default=float(env("LIVECOMMERCE_BRIDGE_CLAIM_IDLE_S", "60")),
        help="take over a dead worker's deliveries after this many idle seconds (60)",
    )


def _media_options(p: argparse.ArgumentParser) -> None:
    env = os.environ.get
    p.add_argument(
        "--media-dir",
        default=env("LIVECOMMERCE_MEDIA_DIR"),
        help="where HLS segments and clips are written, shared by the host's processes "
        "(default ./media; with --demo a temporary directory)",
    )
    p.add_argument(
        "--media-retention-h",
        type=float,
        default=float(env("LIVECOMMERCE_MEDIA_RETENTION_H", "168")),
        help="hours clips and ended streams' segments are kept (default 168, a week)",
    )
    for kind, default, what in (
        ("chat", 90, "the chat archive"),
        ("modlog", 365, "the moderation log"),
        ("orders", 730, "orders that ended"),
        ("analytics", 400, "a show's minute-by-minute figures"),
    ):
        p.add_argument(
            f"--retain-{kind}-days",
            type=float,
            default=float(env(f"LIVECOMMERCE_RETAIN_{kind.upper()}_DAYS", str(default))),
            help=f"days {what} is kept (default {default})",
        )
    p.add_argument(
        "--ice-allow-private",
        action="store_true",
        default=env("LIVECOMMERCE_ICE_ALLOW_PRIVATE") == "1",
        help="let WebRTC peers' loopback, private and link-local addresses be checked "
        "(a LAN deployment; --demo implies it); default: public addresses only",
    )
    p.add_argument(
        "--media-max-viewers",
        type=int,
        default=int(env("LIVECOMMERCE_MEDIA_MAX_VIEWERS", "200")),
        help="WebRTC viewers per process; past it viewers are sent to HLS (default 200)",
    )


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings(
        host=args.host,
        port=args.port,
        redis_url=args.redis_url or None,
        secret=args.secret or None,
        demo=args.demo,
        token_audience=args.token_audience or None,
        metrics_token=args.metrics_token or None,
        header_timeout_s=args.header_timeout_s,
        allowed_origins=tuple(args.allowed_origins),
        token_issuer=args.token_issuer or None,
        tick_ms=args.tick_ms,
        tick_max_ms=args.tick_max_ms,
        fanout_share=args.fanout_share,
        outbound_limit=args.outbound_limit,
        stall_s=args.stall_s,
        hold_s=args.hold_s,
        workers=args.workers,
        bridge=args.bridge,
        analytics=args.analytics,
        media_dir=args.media_dir or (None if args.demo else "media"),
        media_retention_s=round(args.media_retention_h * 3600),
        retention=Retention(
            chat_days=args.retain_chat_days,
            modlog_days=args.retain_modlog_days,
            orders_days=args.retain_orders_days,
            analytics_days=args.retain_analytics_days,
        ),
        media_max_viewers=args.media_max_viewers,
        ice_allow_private=args.ice_allow_private,
        **_order_settings(args),
    ).check()


def _order_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "order_webhook_url": args.order_webhook_url or None,
        "order_webhook_secret": args.order_webhook_secret or None,
        "sandbox_shop": getattr(args, "sandbox_shop", False),
        "bridge_max_failures": args.order_webhook_max_attempts,
        "bridge_timeout_s": args.order_webhook_timeout_s,
        "bridge_concurrency": args.bridge_concurrency,
        "bridge_claim_idle_s": args.bridge_claim_idle_s,
        "currency": args.currency,
    }


def _banner(settings: Settings, port: int) -> str:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    base = f"http://{host}:{port}"
    backend = "redis " + (settings.redis_url or "") if settings.redis_url else "memory (embedded)"
    lines = [f"livecommerce listening on {base}  (backend: {backend})"]
    if settings.demo:
        lines += [
            "",
            "Demo room 'demo' is live. Open, each in its own window:",
            f"  viewer:     {base}/watch.html?room=demo",
            f"  host:       {base}/studio.html?room=demo",
            f"  moderator:  {base}/console.html?rooms=demo",
            f"  protocol playground: {base}/?room=demo",
            "",
            "Demo sign-in (any role: viewer, host, moderator, admin):",
            f'  curl -s -X POST {base}/api/demo/token -d \'{{"role": "host"}}\'',
            f"WebSocket: ws://{host}:{port}/ws   API: {base}/api/openapi.json",
        ]
    return "\n".join(lines)


async def serve(settings: Settings, *, banner: bool = True, parent: int | None = None) -> None:
    """Run until SIGTERM or SIGINT (or, for a worker, until its supervisor ``parent``
    is gone); then drain (clients get 1001) and exit."""
    from livecommerce.http import create_app
    from livecommerce.http.deadlines import DEADLINES, Deadlines, WatchedSite
    from livecommerce.http.logs import AccessLogger

    app = create_app(settings)
    deadlines = app[DEADLINES] = Deadlines(settings.header_timeout_s)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        shutdown_timeout=settings.drain_timeout_s,
        access_log_class=AccessLogger,
        access_log=logging.getLogger("livecommerce.access"),
    )
    await runner.setup()
    site = WatchedSite(
        runner,
        settings.host,
        settings.port,
        deadlines=deadlines,
        backlog=4096,
        reuse_port=settings.workers > 1,
    )
    await site.start()
    port = settings.port
    server = site._server  # the bound port, when 0 was asked for
    if port == 0 and isinstance(server, asyncio.base_events.Server) and server.sockets:
        port = server.sockets[0].getsockname()[1]
    if banner:
        print(_banner(settings, port), flush=True)
    # Everything made so far lives as long as the process: keep it out of every
    # collection, and collect the old generation rarely. With ten thousand open
    # sockets a full collection walks every connection's objects; under a burst of
    # orders the default thresholds spent half of the CPU there (py-spy, 10k buyers).
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watcher = loop.create_task(_orphaned(parent, stop)) if parent else None
    collector = loop.create_task(_collect_after_churn(app, stop))
    await stop.wait()
    collector.cancel()
    if watcher:
        watcher.cancel()
    log.info("shutting down")
    await asyncio.wait_for(runner.cleanup(), timeout=settings.drain_timeout_s + 3)


QUIET_LOGGERS = ("aioice", "aiortc")
"""Libraries whose INFO lines name peers' addresses (every ICE check): WARNING at most."""


def _log_setup(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s",
    )
    for name in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))


def run_one(
    settings: Settings, log_level: str, *, banner: bool = True, parent: int | None = None
) -> int:
    """One server process, until SIGTERM or SIGINT."""
    _log_setup(log_level)
    import uvloop

    try:
        uvloop.run(serve(settings, banner=banner, parent=parent))
    except TimeoutError:
        log.error("drain did not finish in time; exiting anyway")
        return 1
    return 0


def _worker(settings: Settings, log_level: str, banner: bool, parent: int) -> None:
    sys.exit(run_one(settings, log_level, banner=banner, parent=parent))


def run_workers(settings: Settings, log_level: str) -> int:
    """``settings.workers`` server processes on one port; the kernel spreads the
    connections between them (``SO_REUSEPORT``) and Redis joins their rooms.

    This process only supervises: a worker that dies is started again (its clients
    reconnect, to whichever worker the kernel picks, and resume); SIGTERM or SIGINT is
    passed to every worker, which drains, and then this process exits.
    """
    import multiprocessing
    import secrets
    import shutil
    import tempfile
    from dataclasses import replace

    _log_setup(log_level)
    if not settings.secret:  # demo: one throwaway secret for all, or tokens would differ
        settings = replace(settings, secret=secrets.token_urlsafe(32))
    media_tmp = None
    if settings.media_dir is None:  # demo: one media directory for all, or HLS would differ
        media_tmp = tempfile.mkdtemp(prefix="livecommerce-media-")
        settings = replace(settings, media_dir=media_tmp)
    ctx = multiprocessing.get_context("spawn")
    stopping = False

    def start(i: int) -> multiprocessing.process.BaseProcess:
        proc = ctx.Process(
            target=_worker, args=(settings, log_level, i == 0, os.getpid()), name=f"worker-{i}"
        )
        proc.start()
        return proc

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs:
            if proc.pid is not None and proc.exitcode is None:
                os.kill(proc.pid, signal.SIGTERM)

    procs = [start(i) for i in range(settings.workers)]
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while True:
        for i, proc in enumerate(procs):
            proc.join(timeout=0.2)
            if proc.exitcode is not None and not stopping:
                log.warning(
                    "worker %d (pid %s) exited with %s; starting it again",
                    i,
                    proc.pid,
                    proc.exitcode,
                )
                time.sleep(0.5)
                procs[i] = start(i) if not stopping else proc
        if stopping and all(p.exitcode is not None for p in procs):
            if media_tmp is not None:
                shutil.rmtree(media_tmp, ignore_errors=True)
            return max((p.exitcode or 0) for p in procs)


def _tool_settings(args: argparse.Namespace) -> Settings:
    """Settings of a command that works on a server's Redis (no HTTP side)."""
    _log_setup(str(args.log_level))
    extra = _order_settings(args) if args.command == "bridge" else {}
    if not extra.get("order_webhook_url"):  # no HTTP side: no sandbox is served
        extra["sandbox_shop"] = True
    # The token secret only matters to derive the sandbox's webhook secret.
    secret = args.secret or "unused-by-this-command-0123456789abcdef"
    return Settings(redis_url=args.redis_url, secret=secret, **extra).check()


def run_bridge(settings: Settings, log_level: str) -> int:
    """``livecommerce bridge``: order-bridge workers only, until SIGTERM or SIGINT."""
    if settings.order_webhook_url is None:
        raise ConfigError(
            "livecommerce bridge needs --order-webhook-url (the sandbox lives in serve)"
        )
    import uvloop

    from livecommerce.orders.tools import bridge_main

    return uvloop.run(bridge_main(settings))


def reconcile(settings: Settings, rooms: list[str] | None, shop_export: str | None) -> int:
    """``livecommerce orders reconcile``: print the differences; 1 if there are any."""
    from livecommerce.orders.tools import reconcile_main

    return asyncio.run(reconcile_main(settings, rooms, shop_export))


CHURN_COLLECT = 2_000
"""Closed connections after which a full collection is due."""
QUIET_CONNECTIONS = 1_000
"""A due collection waits until no more connections than this are open."""


async def _collect_after_churn(
    app: web.Application,
    stop: asyncio.Event,
    *,
    every_s: float = 5,
    churn: int = CHURN_COLLECT,
    quiet: int = QUIET_CONNECTIONS,
) -> None:
    """Run a full collection after many connections closed.

    With the raised thresholds a full collection almost never comes by itself, and a
    closed connection leaves cyclic garbage (aiohttp's objects; about 11 KB each,
    measured: RSS 272 -> 382 MiB after 10,000 buyers came and went, no collection in
    between). A full collection walks the live heap too: with 10,000 buyers connected
    it took 1.2 s (py-spy, in the middle of a flash sale). So it runs once enough
    connections closed *and* few are open: after the crowd left, when a pause hurts
    nobody. Garbage then stays bounded by the largest crowd, not by every crowd.
    """
    from livecommerce.http.keys import CONNECTIONS, METRICS

    collected_at = 0
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
        open_now = len(app[CONNECTIONS])
        closed = app[METRICS]["connections_total"] - open_now
        if closed - collected_at >= churn and open_now <= quiet:
            started = time.perf_counter()
            found = gc.collect()
            collected_at = closed
            log.info(
                "full collection after %d closed connections: %d objects, %.0f ms",
                closed,
                found,
                (time.perf_counter() - started) * 1000,
            )


async def _orphaned(parent: int, stop: asyncio.Event) -> None:
    """Set ``stop`` once the supervisor ``parent`` is gone (killed without passing on a
    signal): a worker must not outlive it and hold the port."""
    while os.getppid() == parent:
        await asyncio.sleep(1.0)
    log.warning("the supervisor (pid %d) is gone; shutting down", parent)
    stop.set()


def verify_draw(path: str, published: str | None) -> int:
    """``livecommerce verify-draw FILE``: 0 and "valid" when the proof checks out, else
    1 and each problem (which part was tampered with)."""
    from pathlib import Path

    from livecommerce.promotions.draws import Proof, verify

    text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    try:
        proof = Proof.from_json(json.loads(text))
    except ValueError as exc:
        print(f"invalid: {exc}")
        return 1
    problems = verify(proof, published_commitment=published)
    for line in problems:
        print(f"invalid: {line}")
    if problems:
        return 1
    print(f"valid: {len(proof.winners)} winners of {len(proof.entrants)} entrants")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "verify-draw":
        return verify_draw(args.file, args.commitment)
    try:
        if args.command == "bridge":
            return run_bridge(_tool_settings(args), str(args.log_level))
        if args.command == "orders":
            return reconcile(_tool_settings(args), args.room, args.shop_export)
        settings = settings_from(args)
    except ConfigError as exc:
        print(f"livecommerce: {exc}", file=sys.stderr)
        return 2
    if settings.workers > 1:
        return run_workers(settings, str(args.log_level))
    return run_one(settings, str(args.log_level))
