"""Intake's hot path: the front that answers the common request before the middleware
stack, routes that skip FastAPI's per-request machinery, and group commit with its writer
connections."""
