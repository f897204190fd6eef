"""The conv2d block's geometry and its timing, defined once by the cycle model of its control.

`State` (`perfmodel.conv_state`) holds the same registers as `Conv2dBlock` and steps
them under the same conditions, cycle by cycle, without the data. `ConvSchedule.run`
drives it: given the cycle each input element is offered, it returns the cycle each is
taken and the cycle each output leaves (output always ready). `ConvTiming` (the block's
`latency`, `interval`, `timing()`, `transfers()` and `control()`, see
`perfmodel.blocks`, and `stalls()`, which the pipeline asks before it needs the
transfers) comes from it; tests hold it to the control stepped one cycle at a time and
to the RTL simulation.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property, lru_cache

import numpy as np
from cosyn.perfmodel.conv_state import Control, State

from cosyn.ir.nodes import Conv2d

__all__ = ["ConvGeometry", "ConvSchedule", "ConvTiming", "with_spare_rows"]


@dataclass(frozen=True)
class ConvGeometry:
    """Sizes of one conv2d block: input (c, h, w), kernel, stride, padding, output, P, and
    the conv's groups (each output reads the c / cgroups input channels of its group).
    What follows from them is computed once per instance (`cached_property`)."""

    c: int
    h: int
    w: int
    o: int
    kh: int
    kw: int
    sh: int
    sw: int
    ph: int
    pw: int
    oh: int
    ow: int
    p: int
    cgroups: int = 1
    counts: tuple[int, ...] | None = None  # the terms each group issues, None: all
    simd: int = 1  # input channels a term multiplies (SIMD): it divides cin
    spare: int = 0  # line-buffer rows beyond KH + SH (`with_spare_rows` chooses them)

    @classmethod
    def of(
        cls,
        node: Conv2d,
        in_shape: tuple[int, ...],
        p: int,
        counts: tuple[int, ...] | None = None,
        simd: int = 1,
        spare: int = 0,
    ) -> ConvGeometry:
        o, cg, kh, kw = node.weight.shape
        c, per = cg * node.groups, o // node.groups  # P lanes share one group's input
        if in_shape[0] != c or not 1 <= p <= per or (node.groups > 1 and per % p) or cg % simd:
            raise ValueError(
                f"{node.name}: input {tuple(in_shape)}, parallelism {p!r} or SIMD {simd!r} "
                f"does not fit weight {node.weight.shape} of {node.groups} groups (P must "
                f"divide {per} where there are several, SIMD {cg})"
            )
        assert counts is None or simd == 1
        geo = cls(c, in_shape[1], in_shape[2], o, kh, kw, *node.stride, *node.padding,
                  node.shape[1], node.shape[2], p, node.groups, counts, simd, spare)  # fmt: skip
        if geo.y_end < 0:
            raise ValueError(f"{node.name}: every window lies in the padding")
        return geo

    @cached_property
    def groups(self) -> int:
        """Groups of P output channels per pixel (the last partly empty where P does not
        divide O: only without conv groups)."""
        return -(-self.o // self.p)

    @cached_property
    def short(self) -> int:
        """Output channels of the last group."""
        return self.o - (self.groups - 1) * self.p

    @cached_property
    def cin(self) -> int:
        """Input channels a window term runs over: its conv group's."""
        return self.c // self.cgroups

    @cached_property
    def terms(self) -> int:
        """Terms a group of P output channels issues, one a cycle: one window of its conv
        group's channels, `simd` channels a term."""
        return self.kh * self.kw * self.cin // self.simd

    @cached_property
    def cin_words(self) -> int:
        """Words of a conv group's channels at one input pixel: `simd` channels a word."""
        return self.cin // self.simd

    @cached_property
    def words(self) -> int:
        """Line-buffer words per input pixel: `simd` channels a word."""
        return self.c // self.simd

    @cached_property
    def issued(self) -> tuple[int, ...]:
        """The terms each group of P output channels issues: all `terms`, or where the
        block skips zero weights (`counts`), those whose P weights are not all zero."""
        return self.counts if self.counts is not None else (self.terms,) * self.groups

    def channel_base(self, gi: int) -> int:
        """The first input channel that group gi of P output channels reads."""
        return gi * self.p // (self.o // self.cgroups) * self.cin

    @cached_property
    def y_end(self) -> int:
        """The last input row any window reads; rows below it are dropped."""
        return min((self.oh - 1) * self.sh - self.ph + self.kh - 1, self.h - 1)

    @cached_property
    def h_used(self) -> int:
        """Rows per frame written to the line buffer."""
        return self.y_end + 1

    @cached_property
    def lo_max(self) -> int:
        """The largest first-needed row the input side compares with: windows wholly in
        the bottom padding count as needing row H'-1, so the input never runs two
        samples ahead of the windows."""
        return self.h_used - 1

    @cached_property
    def rows(self) -> int:
        """Rows of the line buffer: a window's KH, the SH the next output row adds, and
        `spare` more that the input may run ahead by (the next sample's first rows
        while the last windows are read)."""
        return min(self.kh + self.sh + self.spare, self.h_used)

    @cached_property
    def least_interval(self) -> int:
        """No fewer cycles a sample than it has input elements (one taken a cycle), output
        elements (one leaves a cycle), or terms issued (one a group a cycle)."""
        return max(self.frame_in, self.frame_out, self.oh * self.ow * sum(self.issued))

    @cached_property
    def wc(self) -> int:
        """Elements per input row."""
        return self.w * self.c

    @cached_property
    def frame_in(self) -> int:
        return self.c * self.h * self.w

    @cached_property
    def frame_out(self) -> int:
        return self.o * self.oh * self.ow

    @cached_property
    def need_list(self) -> list[int]:
        """`need` of each pixel's window, row by row."""
        ys = range(-self.ph, self.oh * self.sh - self.ph, self.sh)
        xs = range(-self.pw, self.ow * self.sw - self.pw, self.sw)
        return [self.need(y, x) for y in ys for x in xs]

    def needs(self) -> np.ndarray:
        """Inputs of a sample the block must take before each output (HWC order) can
        leave: its window's last element, and the whole sample for the last pixel."""
        ys = np.arange(self.oh) * self.sh - self.ph
        xs = np.arange(self.ow) * self.sw - self.pw
        per_pixel = np.array([[self.need(y, x) + 1 for x in xs] for y in ys]).reshape(-1)
        per_pixel[-1] = self.frame_in
        return np.repeat(np.maximum(per_pixel, 0), self.o)

    def need(self, y_top: int, x_left: int) -> int:
        """Index in the frame of the last input element the window at (y_top, x_left) reads."""
        row = min(y_top + self.kh - 1, self.h - 1)
        col = min(x_left + self.kw - 1, self.w - 1)
        return (row * self.w + col) * self.c + self.c - 1


class ConvSchedule:
    """Cycle model of `Conv2dBlock`'s control: input transfers and output cycles."""

    frames_for_interval = 4

    def __init__(self, geo: ConvGeometry) -> None:
        self.geo = geo

    def latency_interval(self) -> tuple[int, int]:
        """Latency (first input to first output) and steady-state cycles per sample:
        `frames_for_interval` samples at full rate, the last two first outputs apart.
        Stepped until the registers at a row's first input transfer repeat those at the
        same row of an earlier sample (as in `perfmodel.steady`), the later first outputs
        from the period: the state may repeat within a sample, before the next one's first."""
        return self.full_rate()[:2]

    def full_rate(self) -> tuple[int, int, np.ndarray, np.ndarray]:
        """`latency_interval`, and the first sample's `run` at full rate: the samples
        after it do not change when its inputs are taken nor when its outputs leave (its
        last pixel waits for its whole input, then for nothing from the next sample)."""
        g, n = self.geo, self.frames_for_interval
        st = State(g, np.zeros(n * g.frame_in, dtype=np.int64))
        seen: dict = {}
        row, repeat = 0, None  # the registers compared at each row's first input transfer
        while True:
            if repeat is None and st.k == row * g.wc < st.n_arr and st.ready():
                frame, phase = divmod(row, g.h)
                state = (st.registers(), phase, st.n_out - frame * g.frame_out)
                if state in seen:
                    f0, t0 = seen[state]
                    repeat = (t0, frame - f0, st.t - t0)
                seen[state] = (frame, st.t)
                row += 1
            if repeat is not None or st.n_out >= st.out_max:
                firsts = st.out[: st.n_out : g.frame_out]
                if repeat is not None:
                    t0, m, d = repeat
                    while m <= len(firsts) < n and firsts[-m] >= t0:
                        firsts.append(firsts[-m] + d)
                if len(firsts) >= n:
                    break
            st.next()
        while st.n_out < g.frame_out:
            st.next()
        taken = np.array(st.taken[: g.frame_in], dtype=np.int64)
        out = np.array(st.out[: g.frame_out], dtype=np.int64)
        return firsts[0] - st.taken[0], firsts[n - 1] - firsts[n - 2], taken, out

    def run(self, arrivals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(cycle each input is taken, cycle each output leaves) for whole samples.

        Input k is offered from cycle max(arrivals[k], taken[k-1] + 1); the output is
        always ready; the block starts idle.
        """
        g = self.geo
        arrivals = np.asarray(arrivals, dtype=np.int64)
        if len(arrivals) % g.frame_in:
            raise ValueError(f"Arrivals must be whole samples of {g.frame_in}, not {len(arrivals)}")
        st = State(g, arrivals)
        while st.n_out < st.out_max:
            st.next()
        return np.array(st.taken, dtype=np.int64), np.array(st.out, dtype=np.int64)


class ConvTiming:
    """`Conv2dBlock`'s timing (see `perfmodel.blocks`), from `ConvSchedule`.

    When the multipliers are the bottleneck the interval is OH*OW*ceil(O/P)*KH*KW*C/G/S
    (where the block skips zero weights, OH*OW times the terms the groups issue), plus a
    few cycles per sample where a window waits for its last input row (see
    `with_spare_rows`, which `blocks` applies to the geometry). `kept`: the
    window terms each group issues (`blocks.sparse_terms`, window order), None: all.
    """

    inputs, outputs = 1, 1

    def __init__(self, geo: ConvGeometry, kept: list[np.ndarray] | None = None) -> None:
        assert (kept is None) == (geo.counts is None)
        self.geo, self.kept = geo, kept
        self.schedule = ConvSchedule(geo)
        self.latency, self.interval = _full_rate(geo)[:2]
        self.key = ("conv2d", geo)

    def timing(self, arrivals: np.ndarray) -> np.ndarray:
        """Output transfer cycles of one sample, inputs offered at `arrivals` (idle, ready)."""
        return _run(self.geo, np.asarray(arrivals, dtype=np.int64))[1]

    def transfers(self, arrivals: np.ndarray) -> list[np.ndarray]:
        """Cycles the inputs offered at `arrivals` are taken (the block may stall them)."""
        return [_run(self.geo, np.asarray(arrivals, dtype=np.int64))[0]]

    def stalls(self, arrivals: np.ndarray) -> list[bool]:
        """Whether any input offered at `arrivals` (increasing) is taken later than
        offered: `transfers` differs from `arrivals`. One run, which `transfers` and
        `timing` reuse, also where the pipeline then offers the inputs a cycle later."""
        a = np.asarray(arrivals, dtype=np.int64)
        return [not np.array_equal(_run(self.geo, a)[0], a)]

    def needs(self) -> np.ndarray:
        """Inputs of a sample taken before each output can leave (see `skip_depth`)."""
        return self.geo.needs()

    def control(self) -> Control:
        return Control(State(self.geo, np.zeros(0, dtype=np.int64)))


def with_spare_rows(geo: ConvGeometry) -> ConvGeometry:
    """`geo` with the fewest spare line-buffer rows at which its interval is least. With
    KH + SH rows, a block whose windows take longer than a row's input (or whose output
    does) keeps the next sample's rows out until its last windows are read, and waits
    for them at each sample's start; each spare row lets one more arrive in time. Rows
    are added while the interval exceeds `least_interval` and each lowers it, up to the
    rows a sample writes."""
    while _full_rate(geo)[1] > geo.least_interval and geo.rows < geo.h_used:
        more = replace(geo, spare=geo.spare + 1)
        if _full_rate(more)[1] >= _full_rate(geo)[1]:
            break
        geo = more
    return geo


@lru_cache(maxsize=256)
def _full_rate(geo: ConvGeometry) -> tuple[int, int, np.ndarray, np.ndarray]:
    return ConvSchedule(geo).full_rate()


def _at_full_rate(geo: ConvGeometry, arrivals: np.ndarray) -> bool:
    """One sample whose input k is offered by cycle k: each input is offered whenever
    the block could take it (it takes one a cycle at most, from cycle 0)."""
    return len(arrivals) == geo.frame_in and bool(np.all(arrivals <= np.arange(len(arrivals))))


_RUNS: dict[tuple[ConvGeometry, bytes], tuple[np.ndarray, np.ndarray]] = {}


def _run(geo: ConvGeometry, arrivals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`ConvSchedule.run`, remembered: the pipeline asks for the same sample repeatedly;
    at full rate, the first sample of `ConvSchedule.full_rate`. Where its first window
    reads an input (not only padding), the block does nothing before its first input,
    so inputs offered s cycles later are taken and leave s cycles later: such samples
    share one run (a property test holds `run` to this)."""
    s = int(arrivals[0]) if len(arrivals) and geo.need(-geo.ph, -geo.pw) >= 0 else 0
    base = arrivals - s
    key = (geo, base.tobytes())
    if key not in _RUNS:
        if len(_RUNS) >= 256:
            _RUNS.clear()
        if _at_full_rate(geo, base):
            taken, out = _full_rate(geo)[2:]
        else:
            taken, out = ConvSchedule(geo).run(base)
        taken.flags.writeable = out.flags.writeable = False
        _RUNS[key] = taken, out
    taken, out = _RUNS[key]
    return (taken + s, out + s) if s else (taken, out)
