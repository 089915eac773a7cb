"""Partners: the delivery queue, signed webhooks, a transport to public addresses only."""
