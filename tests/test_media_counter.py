"""The live-video benchmark's pure parts (``loadtests/media.py``): the frame counter drawn
into the synthetic camera's pictures and read back, raw and after a real VP8 and H.264
encode and decode (PyAV), and the figures made of a run's readings."""

from __future__ import annotations

import fractions
from typing import Any

import pytest
from av.codec.context import CodecContext
from av.video.codeccontext import VideoCodecContext
from av.video.frame import PictureType, VideoFrame

from loadtests import media
from loadtests.media import (
    CELLS,
    NUMBERS,
    CounterPicture,
    cell_size,
    counter_bits,
    crc4,
    draw_counter,
    frame_number,
    read_counter,
)

W, H = 640, 360


def gradient(width: int = W, height: int = H, stride: int | None = None) -> bytearray:
    stride = stride or width
    return bytearray((x * 3 + y) % 256 for y in range(height) for x in range(stride))


# -- drawing and reading ------------------------------------------------------------------


@pytest.mark.parametrize("number", [0, 1, 2, 255, 256, 4_095, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF])
def test_a_drawn_number_reads_back(number: int) -> None:
    luma = gradient()
    draw_counter(luma, W, W, H, number)
    assert read_counter(luma, W, W, H) == number


def test_numbers_wrap_at_16_bits() -> None:
    luma = gradient()
    draw_counter(luma, W, W, H, NUMBERS + 5)
    assert read_counter(luma, W, W, H) == 5
    assert counter_bits(NUMBERS * 3 + 7) == counter_bits(7)


def test_every_number_has_its_own_cells_framed_by_white_and_black() -> None:
    seen = set()
    for number in range(NUMBERS):
        bits = counter_bits(number)
        assert len(bits) == CELLS and bits[0] == 1 and bits[-1] == 0
        seen.add(tuple(bits))
    assert len(seen) == NUMBERS


def test_the_strip_is_square_cells_across_the_top_only() -> None:
    luma = gradient()
    before = bytes(luma)
    draw_counter(luma, W, W, H, 0xA5A5)
    cell = cell_size(W)
    assert cell == 29
    assert luma[cell * W :] == before[cell * W :], "nothing below the strip changes"
    assert luma[CELLS * cell : W] == before[CELLS * cell : W], "nor right of it"
    row = luma[:W]
    for c, bit in enumerate(counter_bits(0xA5A5)):
        assert set(row[c * cell : (c + 1) * cell]) == {media.WHITE if bit else media.BLACK}


def test_a_padded_plane_reads_with_its_stride() -> None:
    stride = W + 64
    luma = gradient(stride=stride)
    draw_counter(luma, stride, W, H, 1234)
    assert read_counter(luma, stride, W, H) == 1234
    assert read_counter(luma, W, W, H) is None, "read with the wrong stride: no number"


@pytest.mark.parametrize("fill", [0, 16, 128, 235, 255])
def test_a_flat_picture_has_no_number(fill: int) -> None:
    assert read_counter(bytes([fill]) * (W * H), W, W, H) is None


def test_a_picture_without_the_strip_has_no_number() -> None:
    assert read_counter(gradient(), W, W, H) is None


@pytest.mark.parametrize("number", [0, 1, 0x1234, 0xFFFF])
def test_any_one_cell_inverted_is_refused(number: int) -> None:
    bits = counter_bits(number)
    cell = cell_size(W)
    for c in range(CELLS):
        luma = gradient()
        draw_counter(luma, W, W, H, number)
        level = media.BLACK if bits[c] else media.WHITE
        for y in range(cell):
            luma[y * W + c * cell : y * W + (c + 1) * cell] = bytes([level]) * cell
        assert read_counter(luma, W, W, H) is None, f"cell {c} inverted"


def test_a_cell_neither_black_nor_white_is_refused() -> None:
    luma = gradient()
    draw_counter(luma, W, W, H, 0)
    cell = cell_size(W)
    for y in range(cell):
        luma[y * W + 5 * cell : y * W + 6 * cell] = bytes([125]) * cell
    assert read_counter(luma, W, W, H) is None


def test_check_bits_catch_every_single_bit_error() -> None:
    for number in range(0, NUMBERS, 97):
        for bit in range(16):
            assert crc4(number ^ (1 << bit)) != crc4(number)


def test_too_small_pictures_are_refused() -> None:
    with pytest.raises(ValueError):
        draw_counter(bytearray(100 * 100), 100, 100, 100, 1)
    assert read_counter(bytes(100 * 100), 100, 100, 100) is None
    with pytest.raises(ValueError):
        CounterPicture(100, 100)


def test_the_cameras_pictures_carry_their_numbers_and_move() -> None:
    picture = CounterPicture(W, H)
    frames = [picture.frame(n) for n in (0, 1, 70_000)]
    assert [frame_number(f) for f in frames] == [0, 1, 70_000 % NUMBERS]
    assert bytes(frames[0].planes[0]) != bytes(frames[1].planes[0])
    rgb = frames[1].reformat(format="rgb24")
    assert frame_number(rgb) == 1, "a frame not in planar YUV is converted first"


def test_noise_changes_every_picture_below_the_strip_and_the_cycle_repeats() -> None:
    clean, noisy = CounterPicture(W, H), CounterPicture(W, H, noise_bits=3)
    cell, cycle = cell_size(W), CounterPicture.CYCLE
    for n in (0, 1, cycle - 1):
        a, b = bytes(clean.frame(n).planes[0]), bytes(noisy.frame(n).planes[0])
        strip = [(y * W, y * W + CELLS * cell) for y in range(cell)]
        assert [a[i:j] for i, j in strip] == [b[i:j] for i, j in strip], "strip over noise"
        diff = [x ^ y for x, y in zip(a[cell * W :], b[cell * W :], strict=True)]
        assert max(diff) <= 7 and sum(1 for d in diff if d) > len(diff) // 2
        assert frame_number(noisy.frame(n)) == n
    assert (
        bytes(noisy.frame(1).planes[0])[cell * W :] != bytes(noisy.frame(2).planes[0])[cell * W :]
    )
    assert (
        bytes(noisy.frame(5).planes[0])[cell * W :]
        == bytes(noisy.frame(5 + cycle).planes[0])[cell * W :]
    )
    with pytest.raises(ValueError):
        CounterPicture(W, H, noise_bits=8)


# -- through a real encoder and decoder -----------------------------------------------------


def _encoder(codec: str, bitrate: int) -> VideoCodecContext:
    """An encoder set up as aiortc 1.16 sets up its own (``aiortc/codecs``)."""
    enc = CodecContext.create(codec, "w")
    assert isinstance(enc, VideoCodecContext)
    enc.width, enc.height, enc.pix_fmt = W, H, "yuv420p"
    enc.bit_rate = bitrate
    enc.time_base = fractions.Fraction(1, 90_000)
    enc.framerate = fractions.Fraction(30, 1)
    if codec == "libvpx":
        enc.gop_size = 3000
        enc.qmin, enc.qmax = 2, 56
        enc.options = {
            "bufsize": str(bitrate),
            "cpu-used": "-6",
            "deadline": "realtime",
            "lag-in-frames": "0",
            "minrate": str(bitrate),
            "maxrate": str(bitrate),
            "noise-sensitivity": "4",
            "overshoot-pct": "15",
            "partitions": "0",
            "static-thresh": "1",
            "undershoot-pct": "100",
        }
    else:
        enc.options = {"level": "31", "tune": "zerolatency"}
        enc.profile = "Baseline"
    return enc


@pytest.mark.parametrize("noise_bits", [0, 3])
@pytest.mark.parametrize(
    ("encoder", "decoder", "bitrate"),
    [
        # aiortc's lowest bitrates (it starts at twice these), and half of them
        ("libvpx", "vp8", 250_000),
        ("libvpx", "vp8", 125_000),
        ("libx264", "h264", 500_000),
        ("libx264", "h264", 250_000),
    ],
)
def test_every_frame_reads_back_after_encoding_and_decoding(
    encoder: str, decoder: str, bitrate: int, noise_bits: int
) -> None:
    picture = CounterPicture(W, H, noise_bits)
    enc = _encoder(encoder, bitrate)
    dec = CodecContext.create(decoder, "r")
    assert isinstance(dec, VideoCodecContext)
    first = 40_000  # bits set in both bytes
    sent = list(range(first, first + 90))
    got: list[int | None] = []
    for n in sent:
        frame = picture.frame(n)
        frame.pts = n * 3000
        frame.time_base = fractions.Fraction(1, 90_000)
        frame.pict_type = PictureType.I if n == first else PictureType.NONE
        for packet in enc.encode(frame):
            got += [frame_number(f) for f in dec.decode(packet) if isinstance(f, VideoFrame)]
    for packet in enc.encode(None):
        got += [frame_number(f) for f in dec.decode(packet) if isinstance(f, VideoFrame)]
    assert got == sent


# -- the figures ------------------------------------------------------------------------


def _row(viewers: int, server: float, loop: float | None = None, **over: Any) -> dict[str, Any]:
    """A step's figures; the event loop's thread takes all the server's CPU unless
    ``loop`` says otherwise (the rest is the transcoder's)."""
    row: dict[str, Any] = {
        "viewers": viewers,
        "server_cpu_pct": server,
        "server_loop_cpu_pct": server if loop is None else loop,
        "latency_ms": {"p95": 60.0 if viewers else None},
        "fps": {"camera": 30.0, "below_29": 0},
        "generator": {"main_lag_ms": {"p99": 2.0}, "workers_lag_ms": [{"p99": 3.0}]},
        "machine_pct_of_a_core": {"idle": 80.0, "others": 1.0},
    }
    row.update(over)
    return row


def test_per_viewer_cost_is_the_rise_over_the_publisher_alone_divided_by_viewers() -> None:
    rows = [_row(0, 4.0), _row(1, 6.0), _row(16, 12.0)]
    media.per_viewer(rows)
    assert [r["per_viewer_pct"] for r in rows] == [None, 2.0, 0.5]
    assert [r["marginal_pct"] for r in rows] == [None, 2.0, 0.4]
    alone = [_row(4, 6.0)]
    media.per_viewer(alone)
    assert alone[0]["per_viewer_pct"] is None, "no 0-viewer row: no baseline"


def test_per_viewer_cost_of_the_loop_thread_leaves_out_the_transcoders_drift() -> None:
    # the transcoder's thread drifts by 2 % of a core between windows; the loop's
    # thread carries the viewer: 0.6 % each
    rows = [_row(0, 14.0, loop=4.5), _row(1, 16.1, loop=5.1), _row(2, 13.2, loop=5.7)]
    media.per_viewer(rows)
    assert [r["per_viewer_pct"] for r in rows] == [None, 2.1, -0.4]
    assert [r["per_viewer_loop_pct"] for r in rows] == [None, 0.6, 0.6]
    assert [r["marginal_loop_pct"] for r in rows] == [None, 0.6, 0.6]
    t = media.verdicts("VP8", rows)["per_viewer_le_1pct"]
    assert t == {"met": True, "over_at": [], "whole_process_over_at": [1]}


def test_verdicts_name_the_steps_that_miss_a_target() -> None:
    rows = [
        _row(0, 11.0),
        _row(1, 13.0),
        _row(32, 30.0, latency_ms={"p95": 170.0}, fps={"camera": 30.0, "below_29": 2}),
    ]
    media.per_viewer(rows)
    t = media.verdicts("H264", rows)
    assert t["per_viewer_le_1pct"] == {"met": False, "over_at": [1], "whole_process_over_at": [1]}
    assert t["latency_p95_le_150ms"] == {"met": False, "over_at": [32]}
    assert t["no_viewer_below_29fps"] == {"met": False, "below_at": [32]}
    assert t["ingest_hls_le_10pct_h264"]["met"] is False
    assert media.verdicts("VP8", rows)["ingest_hls_le_10pct_h264"]["met"] is None
    alone = [_row(0, 3.0)]
    media.per_viewer(alone)
    assert [v["met"] for v in media.verdicts("H264", alone).values()] == [None, None, None, True]
    good = [_row(0, 3.0), _row(8, 7.0)]
    media.per_viewer(good)
    assert all(v["met"] for v in media.verdicts("H264", good).values())


def test_limited_by_names_each_limit_and_nothing_with_headroom() -> None:
    assert media.limited_by(_row(4, 20.0)) == []
    assert media.limited_by(_row(4, 95.0)) == ["server"]
    assert media.limited_by(_row(4, 20.0, machine_pct_of_a_core={"idle": 35.0, "others": 1})) == []
    assert media.limited_by(
        _row(4, 20.0, machine_pct_of_a_core={"idle": 25.0, "others": 40.0})
    ) == [
        "machine",
        "others",
    ]
    lagging = {"main_lag_ms": {"p99": 2.0}, "workers_lag_ms": [{"p99": 35.0}]}
    assert media.limited_by(_row(4, 20.0, generator=lagging)) == ["generator"]
    assert media.limited_by(_row(4, 20.0, fps={"camera": 27.0, "below_29": 4})) == ["generator"]


def test_few_viewers_are_measured_longer() -> None:
    opts = media.options(["--steps", "0,1,2,4,8,32"])
    assert [opts.window_for(n) for n in opts.steps] == [60.0, 60.0, 30.0, 15.0, 10.0, 10.0]
    flat = media.options(["--viewer-seconds", "0", "--window", "12"])
    assert {flat.window_for(n) for n in (0, 1, 32)} == {12.0}
