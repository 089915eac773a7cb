"""Partners: their signed webhooks (the signature, where a webhook may go, a transport to
public addresses only) and the sender the deliverer calls for a `partner` delivery."""
