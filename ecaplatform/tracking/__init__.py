"""Run tracking: the SQL store, the claims registry, the verification rule and the Lightning recorder."""
