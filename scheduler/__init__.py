"""Scheduling: each node's parallelism under a device budget (`allocate`), and the order in
which variable-length sequences enter a transformer's layer pipeline (`schedule_sequences`)."""

from cosyn.scheduler.parallelism import Allocation, allocate, allocate_reuse
from cosyn.scheduler.sequences import (
    POLICIES,
    Schedule,
    SequenceStage,
    compare,
    plot_timeline,
    schedule_sequences,
    schedule_table,
    sequence_stages,
    stdlib_lengths,
)

__all__ = [
    "POLICIES",
    "Allocation",
    "Schedule",
    "SequenceStage",
    "allocate",
    "allocate_reuse",
    "compare",
    "plot_timeline",
    "schedule_sequences",
    "schedule_table",
    "sequence_stages",
    "stdlib_lengths",
]
