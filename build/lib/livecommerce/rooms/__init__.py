"""Live rooms: their state (pure, ``state``) and the hub that fans events out (``hub``)."""
