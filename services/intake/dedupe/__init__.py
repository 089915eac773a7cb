"""De-duplication: who a lead is, and the earlier lead of the same person it repeats."""
