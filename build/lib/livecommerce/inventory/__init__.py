"""Products, flash sales and holds: the rules (``rules``, pure) and the batcher."""
