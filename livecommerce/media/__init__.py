"""Live video: WHIP ingest and WHEP playback by forwarding encoded packets.

- :mod:`~livecommerce.media.packets`: RTP packets to encoded frames, keyframe detection.
- :mod:`~livecommerce.media.stream`: a publisher's stream, fanned out to frame sinks,
  with rate-limited keyframe requests (the tap HLS and clips will hang off).
- :mod:`~livecommerce.media.forwarding`: the aiortc adapter (its only user of aiortc
  internals, pinned to aiortc 1.16).
- :mod:`~livecommerce.media.relay`: the WebRTC sessions of a process.

See docs/media.md.
"""

from livecommerce.media.forwarding import AdapterError, check_aiortc
from livecommerce.media.relay import DEFAULT_MAX_VIEWERS, MediaRelay, OverCapacity

__all__ = ["DEFAULT_MAX_VIEWERS", "AdapterError", "MediaRelay", "OverCapacity", "check_aiortc"]
