"""The delivery list: every outgoing call owed (partner webhooks, webhook subscriptions,
CRM pushes), leased, retried, parked and replayed the same way."""
