"""Normalization: raw submitted values made comparable, and a lead's snapshot built from them."""
