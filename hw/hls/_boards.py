"""Boards and parts the HLS backend knows: a board names its part and a clock."""

from __future__ import annotations

from dataclasses import dataclass

from cosyn.errors import CosynError

__all__ = ["BOARDS", "DEFAULT_CLOCK_NS", "DEFAULT_PART", "PARTS", "PART_DSPS", "Board", "resolve"]


@dataclass(frozen=True)
class Board:
    part: str
    clock_ns: float


BOARDS: dict[str, Board] = {
    "pynq-z2": Board("xc7z020clg400-1", 10.0),
    "zcu102": Board("xczu9eg-ffvb1156-2-e", 5.0),
    "alveo-u50": Board("xcu50-fsvh2104-2-e", 5.0),
    "alveo-u250": Board("xcu250-figd2104-2L-e", 5.0),
    "alveo-u280": Board("xcu280-fsvh2892-2L-e", 5.0),
}

# DSP slices of each part the HLS backend knows, the budget of its reuse factors
# (`cosyn.scheduler.allocate_reuse`): 7 series DS190 (Zynq-7000: xc7z010 80, xc7z020 220)
# and DS180 (Artix-7: xc7a100t 240); UltraScale+ DS891 (Zynq UltraScale+: xczu9eg
# 2,520) and DS923 (Virtex UltraScale+: xcvu9p 6,840, xcvu13p 12,288); the Alveo data
# sheets (U50 DS965 5,952, U250 DS962 12,288, U280 DS963 9,024)
PART_DSPS: dict[str, int] = {
    "xc7a100tcsg324-1": 240,
    "xc7z010clg400-1": 80,
    "xc7z020clg400-1": 220,
    "xcu250-figd2104-2L-e": 12288,
    "xcu280-fsvh2892-2L-e": 9024,
    "xcu50-fsvh2104-2-e": 5952,
    "xcvu13p-flga2577-2-e": 12288,
    "xcvu9p-flga2104-2L-e": 6840,
    "xczu9eg-ffvb1156-2-e": 2520,
}
assert {b.part for b in BOARDS.values()} <= set(PART_DSPS)
PARTS: tuple[str, ...] = tuple(sorted(PART_DSPS))

DEFAULT_PART = "xc7z020clg400-1"
DEFAULT_CLOCK_NS = 10.0


def resolve(part: str | None, board: str | None, clock_ns: float | None) -> tuple[str, float]:
    """The part and clock period for a board and/or part; unknown names raise CosynError."""
    if board is not None:
        if board not in BOARDS:
            raise CosynError(f"Unknown board {board!r}; known boards: {', '.join(sorted(BOARDS))}")
        b = BOARDS[board]
        if part is not None and part != b.part:
            raise CosynError(f"Board {board!r} carries part {b.part!r}, not {part!r}; give one")
        part, clock_ns = b.part, b.clock_ns if clock_ns is None else clock_ns
    part = DEFAULT_PART if part is None else part
    if part not in PARTS:
        raise CosynError(f"Unknown part {part!r}; known parts: {', '.join(PARTS)}")
    clock_ns = DEFAULT_CLOCK_NS if clock_ns is None else float(clock_ns)
    if not clock_ns > 0:
        raise CosynError(f"Clock period must be positive, not {clock_ns!r} ns")
    return part, clock_ns
