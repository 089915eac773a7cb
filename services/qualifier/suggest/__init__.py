"""Suggested edits of a lead definition, learnt from what sales said, with their back-test."""
