"""cocotb testbench library for a streaming design that follows the cosyn_top contract.

The design takes one element per beat on `s_axis_*` and gives one per beat on
`m_axis_*`; `tlast` marks the last element of each sample. The parts:

- `Driver`: offers the input elements in order, with random gaps between beats.
- `Ready`: drives `m_axis_tready`, always high or randomly low (back-pressure).
- `Monitor`: takes every output transfer and checks the AXI-Stream rule that a
  beat offered and not taken stays, unchanged, until it is taken.
- `Scoreboard`: splits the output into samples at `tlast` and checks every element,
  in order, against the golden model; it counts wrong, lost and duplicated elements.

One coroutine clocks all of them (`run_stream`): on each falling edge the driver and
`Ready` set the inputs for the next rising edge; at `ReadOnly` every signal has
settled, so a transfer is `valid & ready` as the rising edge will see it. One loop
per cycle, with no coroutine per part, is the fastest way to run cocotb.

`stream_test` is the cocotb test: it reads the vectors (the first COSYN_TB_VECTORS of
them, if set) and the settings from the folder named by COSYN_TB_DIR and writes
`results.json` and `outputs.npz` to COSYN_RESULTS_DIR. It needs only cocotb, NumPy
and the standard library, so the standalone `tb/` folder carries this file as it is.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly

__all__ = ["Driver", "Monitor", "Ready", "Scoreboard", "run_stream", "stream_test"]


def to_bits(value: int, width: int) -> int:
    """Two's complement of `value` in `width` bits (what goes on tdata)."""
    return value & ((1 << width) - 1)


def from_bits(raw: int, width: int, signed: bool) -> int:
    """The element that `width` bits of tdata carry, sign-extended if `signed`."""
    return raw - (1 << width) if signed and raw >> (width - 1) else raw


class Driver:
    """The input side: every element of `samples` (rows of an array, or a list of
    arrays of their own sizes) in order, `tlast` on each sample's last.

    With `gap` > 0, each beat waits a random number of idle cycles (each cycle offers
    with probability 1 - gap); once offered, a beat stays until it is taken.
    """

    def __init__(self, samples: Any, width: int, gap: float, rng: random.Random) -> None:
        self.beats = [
            (to_bits(int(v), width), j == len(s) - 1)
            for s in samples
            for j, v in enumerate(np.asarray(s).reshape(-1).tolist())
        ]
        self.gap, self.rng = gap, rng
        self.pos, self.offering = 0, False
        self.first: int | None = None
        self.last: int | None = None

    @property
    def done(self) -> bool:
        return self.pos == len(self.beats)

    def drive(self) -> tuple[int, int, int]:
        """(tvalid, tdata, tlast) for the next rising edge."""
        if not self.offering and not self.done:
            self.offering = self.gap == 0 or self.rng.random() >= self.gap
        if not self.offering:
            return 0, 0, 0
        data, last = self.beats[self.pos]
        return 1, data, int(last)

    def taken(self, cycle: int) -> None:
        """The offered beat was transferred on `cycle`."""
        self.first = cycle if self.first is None else self.first
        self.last = cycle
        self.pos += 1
        self.offering = False


class Ready:
    """`m_axis_tready`: always high, or random with a probability that changes every
    `phase` cycles among light, heavy and no back-pressure (so FIFOs fill and drain)."""

    LEVELS = (1.0, 0.8, 0.5, 0.15)

    def __init__(self, backpressure: bool, rng: random.Random, phase: int = 97) -> None:
        self.backpressure, self.rng, self.phase = backpressure, rng, phase
        self.p, self.cycle = 1.0, 0

    def drive(self) -> int:
        if not self.backpressure:
            return 1
        if self.cycle % self.phase == 0:
            self.p = self.rng.choice(self.LEVELS)
        self.cycle += 1
        return int(self.p >= 1.0 or self.rng.random() < self.p)


@dataclass
class Monitor:
    """Output transfers (cycle, element, last) and protocol errors: an offered beat that
    changed or vanished before it was taken, and X or Z on a handshake signal or on the
    data of an offered beat (such an element is None, so it never matches)."""

    width: int
    signed: bool
    beats: list[tuple[int, int | None, bool]] = field(default_factory=list)
    protocol_errors: int = 0
    _held: tuple[int | None, int] | None = None

    def read(self, handle: Any, vector: bool = False) -> int | None:
        """The value of a signal; None (and a protocol error) where any bit is X or Z."""
        try:
            return handle.value.to_unsigned() if vector else int(handle.value)
        except ValueError:
            self.protocol_errors += 1
            return None

    def sample(self, cycle: int, valid: int, ready: int, raw: int | None, last: int) -> bool:
        """One cycle's settled output signals; True when a beat is transferred."""
        if self._held is not None and (not valid or (raw, last) != self._held):
            self.protocol_errors += 1  # an offered beat changed or vanished before it was taken
        self._held = (raw, last) if valid and not ready else None
        if valid and ready:
            value = None if raw is None else from_bits(raw, self.width, self.signed)
            self.beats.append((cycle, value, bool(last)))
        return bool(valid and ready)


@dataclass
class Scoreboard:
    """Checks the output stream against `expected` (samples x elements, stream order).

    The stream is split into samples at `tlast`. Within a sample, the longest matching
    head and tail are aligned with the expected sample; what remains in the middle
    counts as wrong elements (`mismatches`) where both sides have one, else as lost
    (expected, not received) or duplicated (received, not expected) elements. Whole
    samples missing or in excess count all their elements as lost or duplicated.
    """

    expected: np.ndarray
    mismatches: int = 0
    lost: int = 0
    duplicated: int = 0
    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    rows: list[list[int]] = field(default_factory=list)

    def check(self, beats: list[tuple[int, int, bool]]) -> Scoreboard:
        """Score all output `beats` (cycle, element, last); returns self."""
        frame: list[tuple[int, int, bool]] = []
        for beat in beats:
            frame.append(beat)
            if beat[2]:
                self._sample(frame)
                frame = []
        if frame:
            self._sample(frame)  # a tail without tlast
        for row in self.expected[len(self.rows) :]:
            self.lost += len(row)
        return self

    @property
    def samples(self) -> int:
        return len(self.rows)

    def _sample(self, frame: list[tuple[int, int, bool]]) -> None:
        got = [b[1] for b in frame]
        self.starts.append(frame[0][0])
        self.ends.append(frame[-1][0])
        if len(self.rows) >= len(self.expected):
            self.duplicated += len(got)
            self.rows.append(got)
            return
        want = self.expected[len(self.rows)].tolist()
        self.rows.append(got)
        head = _common(got, want)
        tail = _common(got[head:][::-1], want[head:][::-1])
        g, w = len(got) - head - tail, len(want) - head - tail
        self.mismatches += min(g, w)
        self.lost += max(w - g, 0)
        self.duplicated += max(g - w, 0)

    def outputs(self) -> np.ndarray:
        """Received samples (samples x elements); missing and X/Z elements read 0."""
        n, per = self.expected.shape
        out = np.zeros((n, per), dtype=np.int64)
        for i, row in enumerate(self.rows[:n]):
            row = [0 if v is None else v for v in row[:per]]
            out[i, : len(row)] = row
        return out


def _common(a: list[int], b: list[int]) -> int:
    """Length of the common prefix of `a` and `b`."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class _Writer:
    """Writes a signal only when its value changes (a write is a costly GPI call)."""

    def __init__(self, handle: Any) -> None:
        self.handle, self.value = handle, None

    def set(self, value: int) -> None:
        if value != self.value:
            self.handle.value = value
            self.value = value


async def reset(dut: Any, cycles: int = 4) -> None:
    """Hold the synchronous reset for `cycles` cycles with both streams idle."""
    dut.s_axis_tvalid.value = 0
    dut.s_axis_tlast.value = 0
    dut.s_axis_tdata.value = 0
    dut.m_axis_tready.value = 0
    dut.rst.value = 1
    for _ in range(cycles):
        await FallingEdge(dut.clk)
    dut.rst.value = 0


async def run_stream(
    dut: Any,
    driver: Driver,
    ready: Ready,
    monitor: Monitor,
    expected: int,
    idle_limit: int,
    drain: int,
) -> int:
    """Clock the driver, `Ready` and the monitor until `expected` samples came out and
    `drain` more cycles passed (to see extra beats), or nothing moved for `idle_limit`
    cycles. Returns the cycles run."""
    wv, wd, wl = _Writer(dut.s_axis_tvalid), _Writer(dut.s_axis_tdata), _Writer(dut.s_axis_tlast)
    wr = _Writer(dut.m_axis_tready)
    s_ready, m_valid, m_data, m_last = (
        dut.s_axis_tready,
        dut.m_axis_tvalid,
        dut.m_axis_tdata,
        dut.m_axis_tlast,
    )
    cycle = idle = samples = 0
    finish: int | None = None
    while idle < idle_limit and (finish is None or cycle < finish):
        await FallingEdge(dut.clk)
        valid, data, last = driver.drive()
        wv.set(valid)
        wd.set(data)
        wl.set(last)
        rdy = ready.drive()
        wr.set(rdy)
        await ReadOnly()
        moved = False
        if valid and monitor.read(s_ready):
            driver.taken(cycle)
            moved = True
        mv = monitor.read(m_valid) or 0
        raw = monitor.read(m_data, vector=True) if mv else 0
        tlast = (monitor.read(m_last) or 0) if mv else 0
        if monitor.sample(cycle, mv, rdy, raw, tlast):
            moved = True
            samples += monitor.beats[-1][2]
        idle = 0 if moved else idle + 1
        if finish is None and samples >= expected and driver.done:
            finish = cycle + drain
        cycle += 1
    await FallingEdge(dut.clk)
    wv.set(0)
    wr.set(0)
    return cycle


def _phase(beats: list[tuple[int, int, bool]], driver: Driver, board: Scoreboard) -> dict:
    """Timing figures of one run: latency (first input to first output), completion (first
    input to sample 0's last output), interval, cycles from first input to last output,
    and each sample's first output from the first input."""
    starts = board.starts
    first_in = driver.first if driver.first is not None else 0
    diffs = [b - a for a, b in pairwise(starts)]
    return {
        "latency": starts[0] - first_in if starts else None,
        "completion": board.ends[0] - first_in if board.ends else None,
        "interval": diffs[-1] if diffs else None,
        "intervals": diffs,
        "cycles": beats[-1][0] - first_in + 1 if beats else None,
        "first_outputs": [s - first_in for s in starts],
    }


async def run_phase(
    dut: Any, cfg: dict, inputs: Any, expected: np.ndarray, stress: bool
) -> tuple[Scoreboard, Monitor, dict]:
    """Reset, stream `inputs` through the design and score the output against `expected`;
    with `stress`, random input gaps and back-pressure (seeded from cfg["seed"])."""
    await reset(dut)
    i, o, seed = cfg["input"], cfg["output"], cfg["seed"]
    driver = Driver(inputs, i["tdata_width"], cfg["gap"] if stress else 0.0, random.Random(seed))
    ready = Ready(stress, random.Random(seed + 1))
    monitor = Monitor(o["tdata_width"], o["signed"])
    await run_stream(dut, driver, ready, monitor, len(expected), cfg["idle_limit"], cfg["drain"])
    board = Scoreboard(expected).check(monitor.beats)
    return board, monitor, _phase(monitor.beats, driver, board)


def _timing_set(inputs: Any, expected: np.ndarray, k: int) -> tuple[Any, np.ndarray]:
    """`k` samples taken cyclically from the vectors, for the full-rate timing run."""
    idx = np.arange(k) % len(inputs)
    return [inputs[i] for i in idx], expected[idx]


def _inputs(vec: Any) -> Any:
    """The input samples of vectors.npz: rows of `inputs`, or, where `sizes` is there
    (samples of their own sizes, as a sequence design takes), `inputs` cut by it."""
    if "sizes" not in vec:
        return vec["inputs"]
    return np.split(vec["inputs"], np.cumsum(vec["sizes"])[:-1])


@cocotb.test()
async def stream_test(dut: Any) -> None:
    """Timing run at full rate (latency, interval), then every vector with random input
    gaps and back-pressure (or at full rate); results go to COSYN_RESULTS_DIR."""
    tb, out = Path(os.environ["COSYN_TB_DIR"]), Path(os.environ["COSYN_RESULTS_DIR"])
    cfg = json.loads((tb / "tb.json").read_text())
    vec = np.load(tb / "vectors.npz")
    limit = int(os.environ.get("COSYN_TB_VECTORS") or 0) or None  # the first N vectors only
    inputs, expected = _inputs(vec)[:limit], vec["expected"][:limit]
    Clock(dut.clk, 10, unit="ns").start()
    t_board, t_mon, timing = await run_phase(
        dut, cfg, *_timing_set(inputs, expected, cfg["timing_samples"]), False
    )
    start = time.perf_counter()
    board, mon, main = await run_phase(dut, cfg, inputs, expected, cfg["backpressure"])
    wall = time.perf_counter() - start
    results = {
        "vectors": len(inputs),
        "mismatches": board.mismatches + t_board.mismatches,
        "lost": board.lost + t_board.lost,
        "duplicated": board.duplicated + t_board.duplicated,
        "protocol_errors": mon.protocol_errors + t_mon.protocol_errors,
        "samples_out": board.samples,
        "cycles": main["cycles"],
        "latency": timing["latency"],
        "completion": timing["completion"],
        "interval": timing["interval"],
        "timing_intervals": timing["intervals"],
        "sample_starts": board.starts,
        "first_outputs": main["first_outputs"],
        "wall_s": wall,
    }
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "outputs.npz", outputs=board.outputs())
    (out / "results.json").write_text(json.dumps(results, indent=1))
