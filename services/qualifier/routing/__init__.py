"""Routing: a lead evaluated against the active definition, assigned, decided (one path)."""
