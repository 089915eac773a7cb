"""Webhook subscriptions (Standard Webhooks): any tool names a URL and the event types it
wants, and gets each such event signed, retried and parked like every other delivery."""
