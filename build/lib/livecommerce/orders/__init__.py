"""Orders beyond the hold: the outbox bridge to the shop's order system, webhook
signing, and the sandbox shop of the demo."""
