"""Scheduling: each node's parallelism under a device budget (`allocate`); the length-aware
sequence scheduler is not yet built."""

from cosyn.scheduler.parallelism import Allocation, allocate

__all__ = ["Allocation", "allocate"]
