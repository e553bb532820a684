"""Data: sources (-> uint8 arrays) and the host pipeline (resize, shuffle, batch, shard per process)."""
