"""Erasure on request: the person leaves intake's store and its waiting events."""
