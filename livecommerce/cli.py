"""The command line: ``livecommerce serve ...`` (also ``python -m livecommerce``).

With ``__main__`` this is the only module that reads argv and the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Sequence

from aiohttp import web

from livecommerce.config import Settings
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
        help="use Redis (any number of processes); default: embedded memory",
    )
    serve.add_argument(
        "--secret",
        default=os.environ.get("LIVECOMMERCE_SECRET"),
        help="HS256 secret that signs tokens (or LIVECOMMERCE_SECRET)",
    )
    serve.add_argument(
        "--demo",
        action="store_true",
        help="demo room, demo sign-in for every role, throwaway secret",
    )
    serve.add_argument("--tick-ms", type=int, default=50, help="fan-out tick (default 50)")
    serve.add_argument(
        "--outbound-limit",
        type=int,
        default=512 * 1024,
        help="bytes queued per connection before it is closed with 4009",
    )
    serve.add_argument(
        "--hold-s", type=int, default=300, help="payment window of a hold, in seconds (default 300)"
    )
    serve.add_argument("--log-level", default=os.environ.get("LIVECOMMERCE_LOG_LEVEL", "INFO"))
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings(
        host=args.host,
        port=args.port,
        redis_url=args.redis_url or None,
        secret=args.secret or None,
        demo=args.demo,
        tick_ms=args.tick_ms,
        outbound_limit=args.outbound_limit,
        hold_s=args.hold_s,
    ).check()


def _banner(settings: Settings, port: int) -> str:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    base = f"http://{host}:{port}"
    backend = "redis " + (settings.redis_url or "") if settings.redis_url else "memory (embedded)"
    lines = [f"livecommerce listening on {base}  (backend: {backend})"]
    if settings.demo:
        lines += [
            "",
            "Demo room 'demo' is live. Open, each in its own window:",
            f"  viewer:     {base}/?room=demo&role=viewer",
            f"  host:       {base}/?room=demo&role=host",
            f"  moderator:  {base}/?room=demo&role=moderator",
            "",
            "Demo sign-in (any role: viewer, host, moderator, admin):",
            f'  curl -s -X POST {base}/api/demo/token -d \'{{"role": "host"}}\'',
            f"WebSocket: ws://{host}:{port}/ws   API: {base}/api/openapi.json",
        ]
    return "\n".join(lines)


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT; then drain (clients get 1001) and exit."""
    from livecommerce.http import create_app

    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=settings.drain_timeout_s)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, backlog=4096, reuse_address=True)
    await site.start()
    port = settings.port
    server = site._server  # the bound port, when 0 was asked for
    if port == 0 and isinstance(server, asyncio.base_events.Server) and server.sockets:
        port = server.sockets[0].getsockname()[1]
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
    await stop.wait()
    log.info("shutting down")
    await asyncio.wait_for(runner.cleanup(), timeout=settings.drain_timeout_s + 3)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = settings_from(args)
    except ConfigError as exc:
        print(f"livecommerce: {exc}", file=sys.stderr)
        return 2
    import uvloop

    try:
        uvloop.run(serve(settings))
    except TimeoutError:
        log.error("drain did not finish in time; exiting anyway")
        return 1
    return 0
