"""The lead lifecycle: the stage machine and what sales tools report back."""
