"""Server CPU of the media relay: ingest plus HLS packaging (the 0-viewer step), and
per WebRTC viewer (the full benchmark of issue 6, with latency, comes later).

Starts a server process of its own (``serve --demo`` settings, asyncio loop) whose ICE
offers only 127.0.0.1, publishes a synthetic camera (a moving gradient, ``--size``
at 30 fps, ``--codec`` VP8 or H264, encoded here by aiortc) and silence over WHIP, then
adds WHEP viewers step by step (``--steps``). At each step, after ``--settle`` seconds,
it measures over ``--window`` seconds:

- the server's CPU (utime + stime of its process from ``/proc``) as a percentage of one
  core; the cost per viewer is (CPU with N viewers - CPU with none) / N, so the ingest
  (receiving and assembling the publisher's packets) is not counted in it;
- each viewer's video frame rate (marker bits counted by a tap on its receiver, with the
  relay's own adapter, so the viewers here do not decode);
- the HLS the server packages all the while (every publisher's stream is packaged):
  the segments listed in ``/hls/demo/live.m3u8`` and the longest of them. With H.264
  the packaging is a remux; with VP8 it is one decode and one encode.

The generator (encoder and viewers) runs in this process on the same machine: read the
figures as one machine's, never as assertions. It talks only to 127.0.0.1 and stops by
itself.

Example::

    python -m loadtests.media --steps 0,1,4,16 --codec VP8
    python -m loadtests.media --steps 0 --codec H264 --window 20   # ingest + HLS
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import json
import multiprocessing
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiortc import (
    AudioStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.rtp import RtpPacket
from av import VideoFrame

from livecommerce.media.forwarding import tap_receiver
from loadtests import _common

SECRET = "loadtest-media-secret-0123456789abcdef"


def _loopback_only() -> None:
    import aioice.ice

    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


def _serve(port: int) -> None:
    """The server process: the demo app, ICE on loopback only."""
    _loopback_only()
    from aiohttp import web

    from livecommerce.config import Settings
    from livecommerce.http import create_app

    web.run_app(
        create_app(Settings(secret=SECRET, demo=True, port=port)),
        host="127.0.0.1",
        port=port,
        print=None,
    )


class Gradient(VideoStreamTrack):
    """A synthetic camera: a diagonal gradient that moves, so frames differ."""

    def __init__(self, width: int, height: int) -> None:
        super().__init__()
        self.width, self.height = width, height
        self._luma = bytes((x + y) % 256 for y in range(height) for x in range(width))
        self._count = 0

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = VideoFrame(width=self.width, height=self.height)
        shift = (self._count * 4 * self.width) % len(self._luma)
        self._count += 1
        y, u, v = frame.planes
        y.update(self._luma[shift:] + self._luma[:shift])
        u.update(bytes([128]) * u.buffer_size)
        v.update(bytes([128]) * v.buffer_size)
        frame.pts = pts
        frame.time_base = fractions.Fraction(time_base.numerator, time_base.denominator)
        return frame


@dataclass
class Viewer:
    pc: RTCPeerConnection
    frames: int = 0
    packets: int = 0

    def on_packet(self, packet: RtpPacket) -> None:
        self.packets += 1
        self.frames += packet.marker


async def post(http: aiohttp.ClientSession, url: str, sdp: str, auth: str | None = None) -> str:
    headers = {"Content-Type": "application/sdp"}
    if auth:
        headers["Authorization"] = f"Bearer {auth}"
    async with http.post(url, data=sdp, headers=headers) as resp:
        body = await resp.text()
        if resp.status != 201:
            raise RuntimeError(f"{url}: {resp.status} {body}")
        return body


async def publish(http: aiohttp.ClientSession, base: str, args: argparse.Namespace) -> Any:
    width, height = (int(n) for n in args.size.split("x"))
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    video = pc.addTransceiver(Gradient(width, height), direction="sendonly")
    video.setCodecPreferences(
        [c for c in RTCRtpSender.getCapabilities("video").codecs if c.name in (args.codec, "rtx")]
    )
    pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    async with http.post(
        f"{base}/api/demo/token",
        json={"role": "host"},
        headers={"Content-Type": "application/json"},
    ) as resp:
        host = (await resp.json())["token"]
    answer = await post(http, f"{base}/api/rooms/demo/whip", pc.localDescription.sdp, host)
    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    return pc


async def watch(http: aiohttp.ClientSession, base: str) -> Viewer:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    viewer = Viewer(pc)
    video = pc.addTransceiver("video", direction="recvonly")
    tap_receiver(video.receiver, viewer.on_packet)
    audio = pc.addTransceiver("audio", direction="recvonly")
    tap_receiver(audio.receiver, lambda packet: None)
    await pc.setLocalDescription(await pc.createOffer())
    answer = await post(http, f"{base}/api/rooms/demo/whep", pc.localDescription.sdp)
    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    return viewer


async def hls(http: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    """What the live playlist lists now: segment count, last sequence, longest one."""
    async with http.get(f"{base}/hls/demo/live.m3u8") as resp:
        if resp.status != 200:
            return {"hls_segments": 0}
        text = await resp.text()
    durations = [
        float(line[8:].rstrip(",")) for line in text.splitlines() if line[:8] == "#EXTINF:"
    ]
    sequence = next(
        (int(line.split(":")[1]) for line in text.splitlines() if "MEDIA-SEQUENCE" in line), 0
    )
    return {
        "hls_segments": sequence + len(durations),
        "hls_max_segment_s": max(durations, default=None),
    }


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    _loopback_only()
    port = args.port
    base = f"http://127.0.0.1:{port}"
    server = multiprocessing.get_context("spawn").Process(target=_serve, args=(port,))
    server.start()
    rows: list[dict[str, Any]] = []
    viewers: list[Viewer] = []
    publisher: Any = None
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{base}/healthz") as resp:
                        if resp.status == 200:
                            break
                if time.monotonic() > deadline:
                    raise RuntimeError("the server did not start")
                await asyncio.sleep(0.1)
            assert server.pid is not None
            publisher = await publish(http, base, args)
            for step in args.steps:
                while len(viewers) < step:
                    viewers.append(await watch(http, base))
                await asyncio.sleep(args.settle)
                frames = [v.frames for v in viewers]
                cpu0, wall0 = _common.cpu_seconds(server.pid), time.monotonic()
                await asyncio.sleep(args.window)
                cpu1, wall1 = _common.cpu_seconds(server.pid), time.monotonic()
                fps = [
                    (v.frames - f) / (wall1 - wall0) for v, f in zip(viewers, frames, strict=True)
                ]
                rows.append(
                    {
                        "viewers": step,
                        "server_cpu_pct": round(100 * (cpu1 - cpu0) / (wall1 - wall0), 2),
                        "min_fps": round(min(fps), 1) if fps else None,
                        "mean_fps": round(sum(fps) / len(fps), 1) if fps else None,
                        **await hls(http, base),
                    }
                )
                print(rows[-1], flush=True)
    finally:
        for v in viewers:
            await v.pc.close()
        if publisher is not None:
            await publisher.close()
        server.terminate()
        server.join(10)
    base_cpu = rows[0]["server_cpu_pct"] if rows and rows[0]["viewers"] == 0 else None
    for row in rows:
        if base_cpu is not None and row["viewers"]:
            row["per_viewer_pct"] = round((row["server_cpu_pct"] - base_cpu) / row["viewers"], 2)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtests.media", description=__doc__)
    parser.add_argument("--port", type=int, default=8190)
    parser.add_argument("--steps", default="0,1,4,16", help="viewer counts, ascending")
    parser.add_argument("--codec", choices=["VP8", "H264"], default="VP8")
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--settle", type=float, default=3.0)
    parser.add_argument("--window", type=float, default=8.0)
    args = parser.parse_args()
    args.steps = sorted(int(n) for n in args.steps.split(","))
    rows = asyncio.run(run(args))
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
