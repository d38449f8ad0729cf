"""livecommerce: a real-time server for live shopping."""

__version__ = "0.1.0"
