"""Scheduling: parallelism under a budget, length-aware sequences (not yet built)."""
