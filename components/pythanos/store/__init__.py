"""``pythanos store``: the store gateway (StoreAPI over the blocks of a bucket)."""
