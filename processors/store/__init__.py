"""State backends and the Redis read model."""
