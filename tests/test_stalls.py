"""Stalled readers: the verdict on samples (pure), and the kernel's figures it reads."""

from __future__ import annotations

import socket
import sys
import time

import pytest

from livecommerce.config import Settings
from livecommerce.errors import ConfigError
from livecommerce.http.stalls import MIN_UNREAD, ReadWatch, read_progress

WINDOW = 128 * 1024


def verdicts(samples: list[tuple[int, int]]) -> list[bool]:
    watch = ReadWatch()
    return [watch.stalled(acked, acked + window) for acked, window in samples]


def test_a_reader_keeping_pace_is_never_stalled() -> None:
    step = 30_000
    assert not any(verdicts([(i * step, WINDOW) for i in range(10)]))


def test_a_reader_that_stops_is_stalled_once_two_spans_in_a_row_show_it() -> None:
    # reads until 60,000 bytes, then its window shrinks by all that arrives
    samples = [(0, WINDOW), (30_000, WINDOW), (60_000, WINDOW)]
    samples += [(60_000 + k * 20_000, WINDOW - k * 20_000) for k in (1, 2, 3, 4)]
    assert verdicts(samples) == [False, False, False, False, False, True, True]


def test_a_window_that_grows_a_little_while_unread_is_still_a_stall() -> None:
    # Linux lets the window's edge creep while the buffer fills (seen: +3.6 KB per
    # 20 KB received); taking less than half of what was sent is not reading
    samples = [(0, 100_000), (20_000, 83_600), (40_000, 67_200), (60_000, 50_800)]
    assert verdicts(samples) == [False, False, False, True]


def test_a_batching_reader_that_reads_every_half_second_is_not_stalled() -> None:
    # the load generator's viewers wake when half a second of stream waits
    samples = [(0, WINDOW), (15_000, WINDOW - 15_000), (30_000, WINDOW), (45_000, WINDOW - 15_000)]
    assert not any(verdicts(samples))


def test_a_batching_reader_of_small_frames_is_not_stalled() -> None:
    # seen at 10,000 viewers: 4.7 KB of small frames waiting for the reader's batch
    # held 42 KB of its window, so its edge moved 39,103 bytes while 81,087 were
    # sent; then it read them, and its window came back
    samples = [(0, WINDOW), (40_000, WINDOW - 20_000), (81_087, WINDOW - 41_984)]
    samples += [(121_000, WINDOW - 10_000), (161_000, WINDOW - 30_000)]
    assert not any(verdicts(samples))


def test_what_a_reader_may_leave_unread_in_a_quiet_room_is_not_a_stall() -> None:
    # a batching reader waits for its batch: in a quiet room it reads nothing for long
    small = MIN_UNREAD // 3
    assert not any(
        verdicts([(0, 10_000), (small, 10_000 - small), (2 * small, 10_000 - 2 * small)])
    )
    assert not any(verdicts([(500, WINDOW)] * 5))


def test_a_window_shut_across_a_span_is_a_stall_at_once() -> None:
    assert verdicts([(90_000, 0), (90_000, 0), (90_000, 0)]) == [False, False, True]
    # it read 4 KiB and was sent 4 KiB more: all it was sent, taken
    assert verdicts([(90_000, 0), (90_000, 4096), (94_096, 0)]) == [False, False, False]


@pytest.mark.skipif(sys.platform != "linux", reason="TCP_INFO's fields are Linux's")
def test_the_kernel_shows_the_edge_stopping_when_the_peer_stops_reading() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    with client, server:
        server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as the server's
        first = read_progress(server)
        assert first is not None
        chunk = b"x" * 8192
        for _ in range(4):  # read as it comes
            server.sendall(chunk)
            got = 0
            while got < len(chunk):
                got += len(client.recv(65536))
        time.sleep(0.05)  # the last ACK with its window
        reading = read_progress(server)
        assert reading is not None
        assert reading[0] - first[0] == 4 * len(chunk)  # every byte acknowledged
        assert reading[1] - first[1] >= 4 * len(chunk)  # and taken
        for _ in range(4):  # now the peer reads nothing
            server.sendall(chunk)
        time.sleep(0.2)  # its kernel's delayed ACK
        stopped = read_progress(server)
        assert stopped is not None
        assert stopped[0] - reading[0] == 4 * len(chunk)  # its kernel took it all
        assert 2 * (stopped[1] - reading[1]) < 4 * len(chunk)  # its application did not


def test_no_progress_from_a_socket_that_is_gone() -> None:
    sock = socket.socket()
    sock.close()
    assert read_progress(sock) is None


@pytest.mark.parametrize("stall_s", [-1.0, 0.1, 4000.0])
def test_stall_settings_out_of_range_are_refused(stall_s: float) -> None:
    with pytest.raises(ConfigError):
        Settings(secret="s" * 32, sandbox_shop=True, stall_s=stall_s).check()


def test_the_stall_watch_can_be_turned_off() -> None:
    assert Settings(secret="s" * 32, sandbox_shop=True, stall_s=0).check().stall_s == 0
