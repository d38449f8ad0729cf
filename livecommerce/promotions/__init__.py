"""Social-commerce mechanics of a live room: coupons (giveaways, group buys and auctions
to come). Pure rules; their stores are in ``backends``."""
