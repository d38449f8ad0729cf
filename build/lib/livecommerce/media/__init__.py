"""Live video: WHIP ingest and WHEP playback by forwarding encoded packets, HLS by
remuxing them, and product clips cut from the HLS.

- :mod:`~livecommerce.media.packets`: RTP packets to encoded frames, keyframe detection.
- :mod:`~livecommerce.media.stream`: a publisher's stream, fanned out to frame sinks,
  with rate-limited keyframe requests (the tap HLS and clips hang off).
- :mod:`~livecommerce.media.forwarding`: the aiortc adapter (its only user of aiortc
  internals, pinned to aiortc 1.16).
- :mod:`~livecommerce.media.relay`: the WebRTC sessions of a process.
- :mod:`~livecommerce.media.h264`, :mod:`~livecommerce.media.fmp4`,
  :mod:`~livecommerce.media.segments`: pure: RTP to H.264 access units, fragmented-MP4
  boxes, cutting segments and writing playlists.
- :mod:`~livecommerce.media.hls`: a stream's HLS on disk;
  :mod:`~livecommerce.media.transcode`: the only codecs (VP8 to H.264, posters).
- :mod:`~livecommerce.media.clips`, :mod:`~livecommerce.media.recorder`: clips from
  pins, and a process's recordings with their retention.

See docs/media.md.
"""

from livecommerce.media.forwarding import AdapterError, check_aiortc
from livecommerce.media.relay import DEFAULT_MAX_VIEWERS, MediaRelay, OverCapacity

__all__ = ["DEFAULT_MAX_VIEWERS", "AdapterError", "MediaRelay", "OverCapacity", "check_aiortc"]
