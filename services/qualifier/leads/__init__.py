"""A lead's record: its views, its history, its snapshot, and erasure."""
