"""The HLS packager's pure parts, without a network: H.264 depacketizing (RFC 6184)
and parameter sets, the fragmented-MP4 boxes (checked by PyAV's demuxer and decoders),
Opus durations, the segmenter's cutting rules and the playlists."""

from __future__ import annotations

import fractions
import io
import itertools
import struct
from collections.abc import Iterator

import av
import pytest
from av.codec.context import CodecContext
from av.video.codeccontext import VideoCodecContext
from av.video.frame import PictureType, VideoFrame

from livecommerce.media import fmp4, h264
from livecommerce.media.segments import (
    Entry,
    Segmenter,
    TimedSample,
    Unwrapper,
    media_playlist,
)
from livecommerce.media.transcode import vp8_depayload

FPS_TICKS = 3000  # 30 fps at 90 kHz


# -- a reference stream: libx264, Annex B ---------------------------------------------


def encode_h264(
    frames: int, *, width: int = 320, height: int = 240, keyframes: tuple[int, ...] = (0,)
) -> list[tuple[list[bytes], bool]]:
    """Access units (NAL units, keyframe) of a small moving picture."""
    enc = CodecContext.create("libx264", "w")
    assert isinstance(enc, VideoCodecContext)
    enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
    enc.time_base = fractions.Fraction(1, 90_000)
    enc.options = {"preset": "ultrafast", "tune": "zerolatency"}
    enc.gop_size = 1000
    out = []
    for i in range(frames):
        frame = VideoFrame(width=width, height=height, format="yuv420p")
        for n, plane in enumerate(frame.planes):
            plane.update(bytes([(i * 9 + n * 40) % 256]) * plane.buffer_size)
        frame.pts = i * FPS_TICKS
        frame.pict_type = PictureType.I if i in keyframes else PictureType.NONE
        for packet in enc.encode(frame):
            out.append((h264.split_annexb(bytes(packet)), packet.is_keyframe))
    return out


@pytest.fixture(scope="module")
def stream() -> list[tuple[list[bytes], bool]]:
    return encode_h264(60, keyframes=(0, 30))


# -- RTP packetizing by the RFC, to check the depacketizer against ---------------------


def stap_a(units: list[bytes]) -> bytes:
    nri = max(u[0] & 0x60 for u in units)
    return bytes([nri | 24]) + b"".join(struct.pack(">H", len(u)) + u for u in units)


def fu_a(unit: bytes, size: int) -> list[bytes]:
    indicator = (unit[0] & 0xE0) | 28
    body = unit[1:]
    chunks = [body[i : i + size] for i in range(0, len(body), size)]
    out = []
    for n, chunk in enumerate(chunks):
        header = unit[0] & 0x1F
        if n == 0:
            header |= 0x80
        if n == len(chunks) - 1:
            header |= 0x40
        out.append(bytes([indicator, header]) + chunk)
    return out


def test_depacketizing_single_units_stap_a_and_fu_a(stream: list[tuple[list[bytes], bool]]) -> None:
    units, key = stream[0]
    assert key and [h264.nal_type(u) for u in units][:2] == [h264.NAL_SPS, h264.NAL_PPS]
    big = max(units, key=len)
    small = [u for u in units if u is not big]
    payloads = [stap_a(small), *fu_a(big, 100)]
    assert h264.nal_units(payloads) == [*small, big]
    assert h264.nal_units(units) == units  # one unit per packet
    # a lost first fragment drops that unit only; a lost last one too
    fragments = fu_a(big, 100)
    assert h264.nal_units([stap_a(small), *fragments[1:]]) == small
    assert h264.nal_units([*fragments[:-1], units[0]]) == [units[0]]
    # an STAP-A whose size overruns it keeps what came before
    broken = stap_a(small)[:-3]
    assert h264.nal_units([broken]) == small[:-1]
    # interleaved-mode and reserved types carry nothing; empty payloads neither
    assert h264.nal_units([b"", bytes([25, 1, 2]), bytes([29, 0x85, 1]), bytes([31])]) == []


def test_annexb_round_trip_and_emulation_prevention() -> None:
    units = [b"\x67\x42\x00\x1f", b"\x68\xce", b"\x65\x88\x00\x00\x01"]
    # a unit's trailing zeros are the next start code's, not its own
    assert h264.split_annexb(h264.annexb(units)) == [*units[:2], b"\x65\x88"]
    assert h264.split_annexb(b"\x00\x00\x01\x09\xf0" + b"\x00\x00\x00\x01\x65\x01") == [
        b"\x09\xf0",
        b"\x65\x01",
    ]
    assert h264.unescape(b"\x67\x00\x00\x03\x01\x00\x00\x03") == b"\x67\x00\x00\x01\x00\x00"
    assert (
        h264.avcc_sample([b"\x65\x01", b"\x06"]) == b"\x00\x00\x00\x02\x65\x01\x00\x00\x00\x01\x06"
    )


@pytest.mark.parametrize(("width", "height"), [(320, 240), (640, 360), (250, 142)])
def test_the_sps_gives_the_picture_size(width: int, height: int) -> None:
    [(units, _)] = encode_h264(1, width=width, height=height)
    sps = next(u for u in units if h264.nal_type(u) == h264.NAL_SPS)
    info = h264.parse_sps(sps)
    assert (info.width, info.height) == (width, height)
    assert info.codec == f"avc1.{sps[1]:02x}{sps[2]:02x}{sps[3]:02x}"
    with pytest.raises(ValueError):
        h264.parse_sps(units[-1])  # not an SPS
    with pytest.raises(ValueError):
        h264.parse_sps(sps[:5])  # cut short


def test_avc_config_record(stream: list[tuple[list[bytes], bool]]) -> None:
    units, _ = stream[0]
    sps, pps = units[0], units[1]
    config = h264.avc_config(sps, [pps])
    assert config[:4] == bytes([1, sps[1], sps[2], sps[3]])
    assert config[4] == 0xFF and config[5] == 0xE1  # 4-byte lengths, one SPS
    assert config[6:8] == struct.pack(">H", len(sps)) and config[8 : 8 + len(sps)] == sps
    rest = config[8 + len(sps) :]
    assert rest[0] == 1 and rest[1:3] == struct.pack(">H", len(pps)) and rest[3:] == pps


def boxes(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    pos = 0
    while pos < len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        assert size >= 8 and pos + size <= len(data), "a box overruns its parent"
        yield data[pos + 4 : pos + 8], data[pos + 8 : pos + size]
        pos += size


def find(data: bytes, path: list[bytes]) -> list[bytes]:
    """Bodies of the boxes at ``path`` (container boxes only above the last)."""
    level = [data]
    for i, kind in enumerate(path):
        found = []
        for body in level:
            for k, b in boxes(body):
                if k == kind:
                    found.append(b)
        level = found
        if i < len(path) - 1:
            level = [b[8:] if kind in (b"stsd",) else b for b in level]
    return level


def segment_of(
    stream: list[tuple[list[bytes], bool]], seq: int, lo: int, hi: int, audio: list[bytes]
) -> bytes:
    video = [
        fmp4.Sample(
            h264.avcc_sample(u for u in units if h264.nal_type(u) not in (7, 8)), FPS_TICKS, key
        )
        for units, key in stream[lo:hi]
    ]
    sound = [fmp4.Sample(p, fmp4.opus_packet_samples(p)) for p in audio]
    return fmp4.media_segment(
        seq, [fmp4.Fragment(1, lo * FPS_TICKS, video), fmp4.Fragment(2, lo * 1600, sound)]
    )


@pytest.fixture(scope="module")
def opus_packets() -> list[bytes]:
    enc = CodecContext.create("libopus", "w")
    enc.sample_rate = 48_000
    enc.layout = "stereo"
    enc.format = "s16"
    packets = []
    for i in range(100):
        frame = av.AudioFrame(format="s16", layout="stereo", samples=960)
        frame.sample_rate = 48_000
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        frame.pts = i * 960
        packets += [bytes(p) for p in enc.encode(frame)]
    return packets


def test_init_and_segments_decode_with_pyav(
    stream: list[tuple[list[bytes], bool]], opus_packets: list[bytes]
) -> None:
    units, _ = stream[0]
    tracks = [
        fmp4.Track(
            1, "video", fmp4.VIDEO_TIMESCALE, h264.avc_config(units[0], [units[1]]), 320, 240
        ),
        fmp4.Track(2, "audio", fmp4.OPUS_TIMESCALE, channels=2),
    ]
    init = fmp4.init_segment(tracks)
    assert [k for k, _ in boxes(init)] == [b"ftyp", b"moov"]
    [moov] = find(init, [b"moov"])
    assert [k for k, _ in boxes(moov)] == [b"mvhd", b"trak", b"trak", b"mvex"]
    first = segment_of(stream, 1, 0, 30, opus_packets[:50])
    second = segment_of(stream, 2, 30, 60, opus_packets[50:])
    assert [k for k, _ in boxes(first)] == [b"moof", b"mdat"]
    [tfdt2] = [t for t in find(second, [b"moof", b"traf", b"tfdt"])][:1]
    assert int.from_bytes(tfdt2[4:12], "big") == 30 * FPS_TICKS

    with av.open(io.BytesIO(init + first + second), mode="r") as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert (video.codec_context.name, video.width, video.height) == ("h264", 320, 240)
        assert (audio.codec_context.name, audio.sample_rate) == ("opus", 48_000)
        pictures = list(container.decode(video=0))
    assert len(pictures) == 60
    assert [p.pts for p in pictures] == [i * FPS_TICKS for i in range(60)]
    with av.open(io.BytesIO(init + second), mode="r") as container:  # a segment decodes on its own
        pictures = list(container.decode(video=0))
        assert len(pictures) == 30 and pictures[0].key_frame
    with av.open(io.BytesIO(init + first), mode="r") as container:
        assert sum(f.samples for f in container.decode(audio=0)) == 50 * 960

    with pytest.raises(ValueError):
        fmp4.init_segment([])
    with pytest.raises(ValueError):
        fmp4.init_segment([fmp4.Track(1, "video", 90_000)])
    with pytest.raises(ValueError):
        fmp4.media_segment(1, [fmp4.Fragment(1, 0, [])])


def test_trun_offsets_point_at_each_tracks_samples() -> None:
    video = [fmp4.Sample(b"V" * 10, 3000, True), fmp4.Sample(b"v" * 5, 3000, False)]
    audio = [fmp4.Sample(b"A" * 7, 960)]
    segment = fmp4.media_segment(9, [fmp4.Fragment(1, 6000, video), fmp4.Fragment(2, 1920, audio)])
    [mfhd] = find(segment, [b"moof", b"mfhd"])
    assert int.from_bytes(mfhd[4:8], "big") == 9
    runs = find(segment, [b"moof", b"traf", b"trun"])
    assert len(runs) == 2
    for run, samples in zip(runs, (video, audio), strict=True):
        count, offset = struct.unpack(">Ii", run[4:12])
        assert count == len(samples)
        data = b"".join(s.data for s in samples)
        assert segment[offset : offset + len(data)] == data
        entries = [struct.unpack(">III", run[12 + 12 * i : 24 + 12 * i]) for i in range(count)]
        assert [(d, size) for d, size, _ in entries] == [(s.duration, len(s.data)) for s in samples]
        assert [f == fmp4.SYNC for _, _, f in entries] == [s.sync for s in samples]


@pytest.mark.parametrize(
    ("packet", "samples"),
    [
        (bytes([0xFC]), 960),  # CELT 20 ms, one frame
        (bytes([0xF8 | 1]), 1920),  # two frames
        (bytes([0x78 | 3, 0x03]), 3 * 960),  # hybrid 20 ms, code 3, three frames
        (bytes([0x18]), 2880),  # SILK 60 ms
        (bytes([0x80]), 120),  # CELT 2.5 ms
        (b"", 0),
        (bytes([0x03]), 0),  # code 3 without its count
    ],
)
def test_opus_packet_durations(packet: bytes, samples: int) -> None:
    assert fmp4.opus_packet_samples(packet) == samples


def test_vp8_payload_descriptors_are_taken_off() -> None:
    assert vp8_depayload(bytes([0x10]) + b"data") == b"data"
    assert vp8_depayload(bytes([0x90, 0x80, 0x05]) + b"data") == b"data"  # 7-bit picture id
    assert vp8_depayload(bytes([0x90, 0xE0, 0x81, 0x02, 0x07, 0x20]) + b"data") == b"data"
    assert vp8_depayload(b"") == b"" and vp8_depayload(bytes([0x80])) == b""


# -- the segmenter ------------------------------------------------------------------------


def video(i: int, key: bool = False) -> TimedSample:
    return TimedSample(i * FPS_TICKS, f"v{i}".encode(), key)


def feed(seg: Segmenter, frames: range, keys: set[int]) -> list[tuple[int, float, bool]]:
    """(seq, duration, independent) of the segments cut."""
    out = []
    for i in frames:
        done = seg.add_main(video(i, i in keys))
        if done is not None:
            out.append((done.seq, round(done.duration, 3), done.independent))
    return out


def test_segments_cut_at_keyframes_past_the_minimum() -> None:
    seg = Segmenter([(1, 90_000)])
    assert seg.add_main(video(0)) is None and not seg.started  # starts at a keyframe
    cuts = feed(seg, range(1, 121), {1, 10, 40, 70, 100})
    # 10 (0.3 s in) is too early; 40 and 70 (1 s apart) and 100 cut
    assert cuts == [(0, 1.3, True), (1, 1.0, True), (2, 1.0, True)]
    last = seg.finish()
    assert last is not None and (last.seq, round(last.duration, 3)) == (3, 0.7)


def test_a_keyframe_is_due_near_the_target_and_after_a_cut_request() -> None:
    seg = Segmenter([(1, 90_000)])
    assert seg.keyframe_due(0)  # before the first one
    seg.add_main(video(0, True))
    assert not seg.keyframe_due(20 * FPS_TICKS, lead_s=0.1)
    assert seg.keyframe_due(27 * FPS_TICKS, lead_s=0.1)  # 0.9 s
    seg.request_cut()
    assert seg.keyframe_due(1 * FPS_TICKS)
    assert feed(seg, range(1, 4), {3}) == [(0, 0.1, True)]  # however short
    assert not seg.cut_pending


def test_without_keyframes_segments_stay_within_the_maximum() -> None:
    seg = Segmenter([(1, 90_000)])
    cuts = feed(seg, range(0, 200), {0})
    assert cuts and all(d <= 2.0 for _, d, _ in cuts)
    assert cuts[0][2] and not any(ind for _, _, ind in cuts[1:])
    assert seg.forced == len(cuts)
    # a stall longer than the maximum: the segment is capped, the timeline has a gap
    seg = Segmenter([(1, 90_000)])
    seg.add_main(video(0, True))
    seg.add_main(video(1))
    done = seg.add_main(video(150, True))  # 5 s later
    assert done is not None and done.duration == 2.0


def test_audio_goes_with_the_video_it_plays_with() -> None:
    seg = Segmenter([(1, 90_000), (2, 48_000)])

    def audio(n: int) -> TimedSample:
        return TimedSample(n * 960, f"a{n}".encode(), True, 960)

    seg.add(1, audio(0))  # before the first keyframe: dropped
    segments = []
    a = 1
    for i in range(0, 91):
        while a * 960 * 90_000 // 48_000 <= i * FPS_TICKS:  # audio keeps up with video
            seg.add(1, audio(a))
            a += 1
        done = seg.add_main(video(i, i % 30 == 0))
        if done is not None:
            segments.append(done)
    assert [s.tracks for s in segments] == [frozenset({1, 2})] * 3
    # each segment's audio starts where the last one's ended: one timeline
    times = []
    for s in segments:
        [_, traf] = find(s.data, [b"moof", b"traf"])
        [tfdt] = find(traf, [b"tfdt"])
        [run] = find(traf, [b"trun"])
        count = int.from_bytes(run[4:8], "big")
        durations = [int.from_bytes(run[12 + 12 * i : 16 + 12 * i], "big") for i in range(count)]
        times.append((int.from_bytes(tfdt[4:12], "big"), sum(durations)))
    for (start, length), (after, _) in itertools.pairwise(times):
        assert start + length == after
    assert times[0][0] == 960 and times[1][0] == 48_000  # 1 s of video = 48,000 ticks
    seg.discard(1)  # audio held and to come is dropped
    seg.add(1, audio(1000))
    last = seg.finish()
    assert last is not None and last.tracks == frozenset({1})
    assert seg.finish() is None  # nothing left


def test_new_parameters_start_a_new_init_at_their_keyframe() -> None:
    seg = Segmenter([(1, 90_000)])
    feed(seg, range(0, 20), {0})
    seg.new_init()
    assert seg.add_main(video(20)) is None  # made with the new parameters: dropped
    done = seg.add_main(video(21, True))
    assert done is not None and done.init == 0
    feed(seg, range(22, 40), set())
    last = seg.finish()
    assert last is not None and last.init == 1 and last.independent


def test_rtp_timestamps_unwrap() -> None:
    unwrap = Unwrapper()
    start = 0xFFFFFFFF - 3000
    assert unwrap(start) == start
    assert unwrap(1000) == start + 4001  # wrapped forwards
    assert unwrap(0xFFFFFFFF - 10) == start + 2990  # a late one, before the wrap
    assert unwrap(4000) == start + 7001


# -- playlists -------------------------------------------------------------------------


def entries(n: int, *, init_change_at: int | None = None) -> list[Entry]:
    out = []
    for i in range(n):
        changed = init_change_at is not None and i >= init_change_at
        out.append(
            Entry(
                seq=i,
                duration=1.0 + i / 1000,
                uri=f"{i}.m4s",
                init_uri="init-1.mp4" if changed else "init.mp4",
                program_time=1_800_000_000 + i,
                discontinuity=1 if changed else 0,
            )
        )
    return out


def test_live_and_vod_playlists() -> None:
    live = media_playlist(entries(8)[-6:], ended=False, prefix="s1/")
    lines = live.splitlines()
    assert lines[:4] == [
        "#EXTM3U",
        "#EXT-X-VERSION:7",
        "#EXT-X-TARGETDURATION:2",
        "#EXT-X-MEDIA-SEQUENCE:2",
    ]
    assert '#EXT-X-MAP:URI="s1/init.mp4"' in lines and "#EXT-X-INDEPENDENT-SEGMENTS" in lines
    assert lines[-3:] == [
        "#EXT-X-PROGRAM-DATE-TIME:2027-01-15T08:00:07.000Z",
        "#EXTINF:1.007,",
        "s1/7.m4s",
    ]
    assert "#EXT-X-ENDLIST" not in lines
    assert media_playlist(entries(2), ended=True).endswith("#EXT-X-ENDLIST\n")

    vod = media_playlist(entries(4, init_change_at=2), ended=True, vod=True).splitlines()
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in vod and vod[-1] == "#EXT-X-ENDLIST"
    assert vod.count("#EXT-X-DISCONTINUITY") == 1
    change = vod.index("#EXT-X-DISCONTINUITY")
    assert vod[change + 1] == '#EXT-X-MAP:URI="init-1.mp4"' and vod[change + 4] == "2.m4s"
    window = media_playlist(entries(6, init_change_at=2)[3:], ended=False).splitlines()
    assert "#EXT-X-DISCONTINUITY-SEQUENCE:1" in window and "#EXT-X-DISCONTINUITY" not in window
    not_independent = [*entries(2), Entry(2, 2.0, "2.m4s", "init.mp4", 0.0, independent=False)]
    assert "#EXT-X-INDEPENDENT-SEGMENTS" not in media_playlist(not_independent, ended=False)
