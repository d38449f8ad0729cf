"""The wire protocol: bytes in, commands out; events in, bytes out.

Pure: no I/O, no clock (time is passed in). The only package that imports orjson.
"""

from livecommerce.protocol.codec import (
    OPS,
    ROOM_ID,
    Command,
    decode,
    dumps,
    encode_error,
    encode_event,
    encode_reply,
    fragment,
    is_user_id,
    line_seq,
    loads,
    sequence,
    split_frame,
)
from livecommerce.protocol.frames import close_frame, text_frame

__all__ = [
    "OPS",
    "ROOM_ID",
    "Command",
    "close_frame",
    "decode",
    "dumps",
    "encode_error",
    "encode_event",
    "encode_reply",
    "fragment",
    "is_user_id",
    "line_seq",
    "loads",
    "sequence",
    "split_frame",
    "text_frame",
]
