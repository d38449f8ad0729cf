"""The load generator: its WebSocket client and order checks, and its scenarios run at a
tiny size against servers the tests start (the figures' presence and sense, never times).
"""

from __future__ import annotations

import json
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from livecommerce.protocol import dumps, sequence, text_frame
from loadtests import plot
from loadtests._common import CommandRefused, listening_pids
from loadtests.crowd import CrowdPlan, Tally, Viewer, evenly
from loadtests.wsclient import (
    CLOSE_ABNORMAL,
    OP_TEXT,
    WsClient,
    accept_key,
    masked_frame,
    source_address,
)
from tests.conftest import ROOT, SECRET, ServerFactory, ServerProcess, token

# -- the client, without a network ---------------------------------------------------------


def test_accept_key_is_rfc_6455s_example() -> None:
    assert accept_key(b"dGhlIHNhbXBsZSBub25jZQ==") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize("size", [0, 5, 125, 126, 300, 65_535, 65_536])
def test_masked_frame_unmasks_to_the_payload(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    frame = masked_frame(OP_TEXT, payload)
    assert frame[0] == 0x81 and frame[1] & 0x80, "final text frame, masked"
    length, at = frame[1] & 0x7F, 2
    if length == 126:
        (length,), at = struct.unpack("!H", frame[2:4]), 4
    elif length == 127:
        (length,), at = struct.unpack("!Q", frame[2:10]), 10
    mask, body = frame[at : at + 4], frame[at + 4 :]
    assert length == size == len(body)
    assert bytes(b ^ mask[i % 4] for i, b in enumerate(body)) == payload


def test_source_addresses_are_distinct_loopback_and_never_the_servers() -> None:
    seen = {source_address(10, n) for n in range(20_000)}
    assert len(seen) == 20_000
    for addr in seen:
        a, b, c, d = (int(x) for x in addr.split("."))
        assert (a, b) == (127, 10) and 0 <= c <= 255 and 1 <= d <= 254
    assert source_address(11, 0) != source_address(10, 0)
    with pytest.raises(ValueError):
        source_address(0, 1)  # 127.0.x.y holds the server's 127.0.0.1


def test_evenly_spreads_and_offsets() -> None:
    assert evenly(10, 5) == [0, 2, 4, 6, 8]
    assert evenly(10, 5, offset=0.5) == [1, 3, 5, 7, 9]
    assert evenly(3, 10) == [0, 1, 2]
    assert evenly(0, 3) == [] and evenly(5, 0) == []


class _Transport:
    """Enough of a transport for feeding a client by hand."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> None:
        return None


def _upgraded(client: WsClient) -> _Transport:
    """Connect ``client`` to a fake transport and answer its upgrade request."""
    transport = _Transport()
    client.connection_made(transport)  # type: ignore[arg-type]
    key = transport.written[0].split(b"Sec-WebSocket-Key: ")[1].split(b"\r\n")[0]
    client.feed(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept_key(key) + b"\r\n\r\n"
    )
    return transport


def _viewer() -> tuple[Viewer, Tally]:
    plan = CrowdPlan(
        index=0,
        targets=(("127.0.0.1", 1),),
        tokens=("t",),
        room="r",
        block=10,
        batch=1,
        connect_timeout_s=1.0,
        deadline_s=10.0,
    )
    tally = Tally()
    viewer = Viewer(plan, tally, 0)
    _upgraded(viewer)
    viewer.control = False
    viewer.joined = True
    viewer.last_seq = 10
    tally.counting = True
    return viewer, tally


def _event(seq: int | None, type_: str = "chat") -> bytes:
    body = dumps({"type": type_, "room": "r", "ts": 1, "text": "x"})
    return body if seq is None else sequence(seq, body)


def _frame(*lines: bytes) -> bytes:
    return text_frame(b"\n".join(lines))


async def test_a_viewer_joins_with_connect_and_join_in_one_write_and_names_a_refusal(
    start_server: ServerFactory,
) -> None:
    server = await start_server()
    plans = [
        CrowdPlan(
            index=0,
            targets=(("127.0.0.1", server.port),),
            tokens=(tok,),
            room="demo",
            block=11,
            batch=1,
            connect_timeout_s=5.0,
            deadline_s=10.0,
        )
        for tok in (token("v1"), "x.y.z")
    ]
    viewer = Viewer(plans[0], Tally(), 0)
    await viewer.join(None)
    assert viewer.joined and viewer.epoch and viewer.refused is None
    viewer.close()
    refused = Viewer(plans[1], Tally(), 1)
    with pytest.raises(CommandRefused) as info:
        await refused.join(None)
    assert info.value.code == "unauthorized" and not refused.joined


async def test_a_viewer_counts_lines_and_sees_gaps_and_repeats_without_parsing() -> None:
    viewer, tally = _viewer()
    viewer.feed(_frame(_event(11), _event(None, "likes"), _event(12)))
    assert (tally.frames, tally.lines, tally.gaps, tally.duplicates) == (1, 3, 0, 0)
    viewer.feed(_frame(_event(15)))  # 13 and 14 missing
    assert (tally.gaps, tally.missing) == (1, 2)
    viewer.feed(_frame(_event(16), _event(18)))  # a hole inside the frame
    assert (tally.gaps, tally.missing) == (2, 3)
    viewer.feed(_frame(_event(17), _event(18), _event(19)))  # 17 and 18 again
    assert tally.duplicates == 2
    assert viewer.last_seq == 19
    viewer.feed(_frame(_event(None, "presence")))  # no seq: nothing to check
    assert (tally.frames, tally.lines, tally.gaps) == (5, 10, 2)


async def test_frames_that_begin_alike_and_are_as_long_are_told_apart() -> None:
    """Members written at different points of a tick get frames that may begin with
    the same unsequenced line and be as long, with other seqs after it."""
    viewer, tally = _viewer()
    likes = _event(None, "likes") + b" " * 64  # longer than the key's first bytes
    viewer.feed(_frame(likes, _event(11), _event(12)))
    other, _ = _viewer()
    other.tally = tally  # a viewer of the same worker, a little ahead
    other.last_seq = 12
    other.feed(_frame(likes, _event(13), _event(14)))
    assert (tally.gaps, tally.duplicates, other.last_seq) == (0, 0, 14)


async def test_frames_split_anywhere_are_put_back_together() -> None:
    viewer, tally = _viewer()
    big = _event(11) + b" " * 70_000  # a frame with a 64-bit length
    stream = _frame(big) + _frame(_event(12), _event(13)) + _frame(_event(14))
    for i in range(0, len(stream), 7_001):
        viewer.feed(stream[i : i + 7_001])
    assert (tally.frames, tally.lines, tally.gaps, viewer.last_seq) == (3, 4, 0, 14)


async def test_a_sampled_viewer_times_chats() -> None:
    viewer, tally = _viewer()
    viewer.sampled = True
    viewer.feed(_frame(_event(11), _event(None, "likes"), _event(12)))
    assert len(tally.latencies_ms) == 2 and tally.bad_lines == 0


async def test_the_client_answers_pings_and_close_frames() -> None:
    client = WsClient("h:1")
    transport = _upgraded(client)
    client.feed(bytes((0x89, 3)) + b"abc")
    pong = transport.written[-1]
    assert pong[0] == 0x8A and pong[1] == 0x80 | 3
    assert bytes(b ^ pong[2 + i % 4] for i, b in enumerate(pong[6:])) == b"abc"
    client.feed(bytes((0x88, 2)) + struct.pack("!H", 4009))
    assert client.close_code == 4009 and transport.closed


async def test_a_wrong_accept_key_fails_the_handshake() -> None:
    client = WsClient("h:1")
    transport = _Transport()
    client.connection_made(transport)  # type: ignore[arg-type]
    client.feed(b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: nope\r\n\r\n")
    assert transport.closed and client.close_code == 1002
    with pytest.raises(ConnectionError):
        await client.opened()
    client.connection_lost(None)
    assert client.close_code != CLOSE_ABNORMAL


# -- the plot -----------------------------------------------------------------------------


def _result(viewers: int, p99: float, cpu: float) -> dict[str, Any]:
    return {
        "viewers": viewers,
        "latency_ms": {"p50": p99 / 2, "p99": p99},
        "server": {"cpu_pct_total": cpu},
        "load": {"chats_per_s_target": 200, "like_taps_per_s_target": 10_000},
    }


def test_plot_draws_a_png_from_sweep_json(tmp_path: Path) -> None:
    doc = {
        "tool": "loadtests",
        "scenario": "sweep",
        "server": {"backend": "redis", "pids": [1, 2]},
        "results": [_result(1000, 60.0, 30.0), _result(100, 40.0, 10.0)],
    }
    src = tmp_path / "sweep.json"
    src.write_text(json.dumps(doc))
    s = plot.series(doc, "x")
    assert s.viewers == [100, 1000] and s.p99_ms == [40.0, 60.0] and s.cpu_pct == [10.0, 30.0]
    out = tmp_path / "img" / "sweep.png"
    assert plot.main([str(src), "-o", str(out)]) == 0
    assert out.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(ValueError):
        plot.series({"tool": "other"}, "y")


# -- scenarios against real servers ---------------------------------------------------------


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadtests", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def two_workers(redis_url: str, spawn: Callable[..., ServerProcess]) -> Iterator[ServerProcess]:
    """``serve --workers 2`` on the session's Redis, both workers listening (the server
    answers once one of them does)."""
    p = spawn("--redis-url", redis_url, "--secret", SECRET, "--demo", "--workers", "2")
    deadline = time.monotonic() + 30
    while len(listening_pids(p.port)) < 2:
        assert time.monotonic() < deadline, "the second worker never listened"
        time.sleep(0.05)
    yield p
    p.stop(signal.SIGTERM)


def _check_room(r: dict[str, Any], viewers: int) -> None:
    c = r["connections"]
    assert c["requested"] == c["connected"] == r["open_viewers"] == viewers
    assert c["failed"] == 0 and c["errors"] == {}
    assert c["connects_per_s"] > 0
    assert isinstance(c["idle_rss"]["per_connection_kib"], float)
    assert r["order"] == {"gaps": 0, "missing": 0, "duplicates": 0, "bad_lines": 0}
    assert r["closes_4009"] == 0
    assert r["load"]["answers"]["chat"].get("ok", 0) > 0
    assert set(r["load"]["answers"]["chat"]) == {"ok"}
    assert r["deliveries"]["lines_per_s"] >= r["deliveries"]["frames_per_s"] > 0
    lat = r["latency_ms"]
    assert lat["chats_timed"] > 0
    assert lat["p50"] <= lat["p99"] <= lat["p999"] <= lat["max"]
    assert len(r["server"]["cpu_pct_each"]) == 2, "both server processes read"
    assert r["server"]["rss_mib_total"] > 0
    assert r["generator"]["cpu_pct_total"] > 0


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_quick_mode_measures_a_room_and_a_flash_sale(
    two_workers: ServerProcess, tmp_path: Path
) -> None:
    out = tmp_path / "quick.json"
    done = _run(
        [
            "quick",
            "--url",
            two_workers.url,
            "--secret",
            SECRET,
            "--viewers",
            "120",
            "--json",
            str(out),
            "--results-dir",
            str(tmp_path / "results"),
        ],
        150,
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(out.read_text())
    assert doc["scenario"] == "quick" and doc["command"].startswith("python -m loadtests quick")
    assert len(doc["server"]["pids"]) == 2
    [room] = doc["results"]
    _check_room(room, 120)
    sale = doc["flash_sale"]["summary"]
    assert sale["connections"]["connected"] == sale["connections"]["requested"] == 120
    assert sale["outcome"]["oversold"] == 0 and sale["check_ok"]
    assert sale["reply_latency_ms"]["p999"] is not None
    assert len(list((tmp_path / "results").glob("quick-*.json"))) == 1
    assert "viewers" in done.stdout and "flash sale" in done.stdout


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_reconnect_storm_resumes_the_killed_processs_viewers(
    two_workers: ServerProcess, tmp_path: Path
) -> None:
    out = tmp_path / "storm.json"
    done = _run(
        [
            "reconnect-storm",
            "--url",
            two_workers.url,
            "--secret",
            SECRET,
            "--viewers",
            "80",
            "--chats",
            "20",
            "--likes",
            "200",
            "--warmup",
            "1",
            "--kill-after",
            "1",
            "--storm-window",
            "12",
            "--json",
            str(out),
            "--results-dir",
            "",
        ],
        150,
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(out.read_text())
    storm = doc["reconnect_storm"]
    assert storm["killed_pid"] in storm["pids_before"]
    assert storm["killed_pid"] not in storm["pids_after"]
    assert 0 < storm["victims"] < 80, "the kernel spread the viewers over both processes"
    assert storm["back"] == storm["recovered_by_server"] == storm["victims"]
    assert storm["victims_gaps"] == storm["others_gaps"] == 0
    assert storm["others"] + storm["victims"] == 80
    assert storm["open_at_end"] == 80


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_coupon_claims_grants_exactly_the_quantity_over_two_processes(tmp_path: Path) -> None:
    """The coupon benchmark on its own server (2 processes on Redis), small."""
    out = tmp_path / "claims.json"
    args = ["coupon-claims", "--users", "60", "--claims", "3", "--quantity", "25"]
    done = _run([*args, "--procs", "1", "--json", str(out)], 100)
    assert done.returncode == 0, done.stderr
    fig = json.loads(out.read_text())
    assert fig["granted"] == 25 and fig["doubled"] == 0 and fig["remaining"] == 0
    assert fig["claims"] == 180 and fig["outcomes"]["ok"] == 25
    assert fig["claims_per_s"] > 0 and fig["p50_ms"] <= fig["p99_ms"] <= fig["max_ms"]


@pytest.mark.parametrize(
    "argv",
    [
        ["coupon-claims", "--users", "30", "--claims", "2", "--quantity", "10", "--procs", "1"],
        ["bids", "--users", "30", "--bids", "3", "--procs", "1"],
        ["group-fill", "--groups", "2", "--size", "4"],
    ],
)
def test_the_promotion_benchmarks_run_and_check_their_invariant(
    argv: list[str], tmp_path: Path
) -> None:
    """Small runs of ``python -m loadtests coupon-claims|bids|group-fill`` (own server on
    its own Redis): they end well and write figures that say the invariant held."""
    out = tmp_path / "fig.json"
    done = subprocess.run(
        [sys.executable, "-m", "loadtests", *argv, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    fig = json.loads(out.read_text())
    assert fig["ok"] is True and fig["scenario"] == argv[0]
