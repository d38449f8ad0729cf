"""Moderation: rate limits, abuse, mutes, bans, slow mode (``rules`` is pure)."""
