"""Leads: accepting a lead into the store (de-duplicated, with its event) and reading it back."""
