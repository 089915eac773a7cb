"""Intake's key store: each lead's data key, wrapped by a master key, served to the
services and subscribers that hold a `keys:read` token, destroyed on erasure."""
