"""The conv2d block's geometry and its timing, defined once by the cycle model of its control.

`_State` holds the same registers as `Conv2dBlock` and steps them under the same
conditions, cycle by cycle, without the data. `ConvSchedule.run` drives it: given the
cycle each input element is offered, it returns the cycle each is taken and the cycle
each output leaves (output always ready). `ConvTiming` (the block's `latency`,
`interval`, `timing()`, `transfers()` and `control()`, see `perfmodel.blocks`) comes
from it; tests hold it to the RTL simulation.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
from cosyn.perfmodel.mac import QUIET, MacPipe
from cosyn.perfmodel.steady import registers

from cosyn.ir.nodes import Conv2d

__all__ = ["ConvGeometry", "ConvSchedule", "ConvTiming"]


@dataclass(frozen=True)
class ConvGeometry:
    """Sizes of one conv2d block: input (c, h, w), kernel, stride, padding, output, P.
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

    @classmethod
    def of(cls, node: Conv2d, in_shape: tuple[int, ...], p: int) -> ConvGeometry:
        o, c, kh, kw = node.weight.shape
        if in_shape[0] != c or o % p:
            raise ValueError(
                f"{node.name}: input {tuple(in_shape)} or parallelism {p!r} does not fit "
                f"weight {node.weight.shape} (P must divide {o})"
            )
        geo = cls(c, in_shape[1], in_shape[2], o, kh, kw, *node.stride, *node.padding,
                  node.shape[1], node.shape[2], p)  # fmt: skip
        if geo.y_end < 0:
            raise ValueError(f"{node.name}: every window lies in the padding")
        return geo

    @cached_property
    def groups(self) -> int:
        """Groups of P output channels per pixel."""
        return self.o // self.p

    @cached_property
    def terms(self) -> int:
        """Multiply-accumulates per output channel: one window."""
        return self.kh * self.kw * self.c

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
        """Rows of the line buffer: a window's KH and the SH the next output row adds."""
        return min(self.kh + self.sh, self.h_used)

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
        Stepped until the registers at a sample's first input transfer repeat an earlier
        sample's (as in `perfmodel.steady`), the later first outputs from the period."""
        g, n = self.geo, self.frames_for_interval
        st = _State(g, np.zeros(n * g.frame_in, dtype=np.int64))
        seen: dict = {}
        frame, repeat = 0, None
        while True:
            if repeat is None and st.k == frame * g.frame_in < st.n_arr and st.ready():
                state = (registers(st), st.n_out - frame * g.frame_out)
                if state in seen:
                    f0, t0 = seen[state]
                    repeat = (t0, frame - f0, st.t - t0)
                seen[state] = (frame, st.t)
                frame += 1
            if repeat is not None or st.n_out >= st.out_max:
                firsts = st.out[: st.n_out : g.frame_out]
                if repeat is not None:
                    t0, m, d = repeat
                    while m <= len(firsts) < n and firsts[-m] >= t0:
                        firsts.append(firsts[-m] + d)
                if len(firsts) >= n:
                    return firsts[0] - st.taken[0], firsts[n - 1] - firsts[n - 2]
            st.next()

    def run(self, arrivals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(cycle each input is taken, cycle each output leaves) for whole samples.

        Input k is offered from cycle max(arrivals[k], taken[k-1] + 1); the output is
        always ready; the block starts idle.
        """
        g = self.geo
        arrivals = np.asarray(arrivals, dtype=np.int64)
        if len(arrivals) % g.frame_in:
            raise ValueError(f"Arrivals must be whole samples of {g.frame_in}, not {len(arrivals)}")
        st = _State(g, arrivals)
        while st.n_out < st.out_max:
            st.next()
        return np.array(st.taken, dtype=np.int64), np.array(st.out, dtype=np.int64)


class ConvTiming:
    """`Conv2dBlock`'s timing (see `perfmodel.blocks`), from `ConvSchedule`.

    When the multipliers are the bottleneck the interval is OH*OW*(O/P)*KH*KW*C, plus a
    few cycles per sample where a window waits for its last input row.
    """

    inputs, outputs = 1, 1

    def __init__(self, geo: ConvGeometry) -> None:
        self.geo = geo
        self.schedule = ConvSchedule(geo)
        self.latency, self.interval = _latency_interval(geo)
        self.key = ("conv2d", geo)

    def timing(self, arrivals: np.ndarray) -> np.ndarray:
        """Output transfer cycles of one sample, inputs offered at `arrivals` (idle, ready)."""
        return _run(self.geo, np.asarray(arrivals, dtype=np.int64).tobytes())[1]

    def transfers(self, arrivals: np.ndarray) -> list[np.ndarray]:
        """Cycles the inputs offered at `arrivals` are taken (the block may stall them)."""
        return [_run(self.geo, np.asarray(arrivals, dtype=np.int64).tobytes())[0]]

    def needs(self) -> np.ndarray:
        """Inputs of a sample taken before each output can leave (see `skip_depth`)."""
        return self.geo.needs()

    def control(self) -> _Control:
        return _Control(_State(self.geo, np.zeros(0, dtype=np.int64)))


@lru_cache(maxsize=256)
def _latency_interval(geo: ConvGeometry) -> tuple[int, int]:
    return ConvSchedule(geo).latency_interval()


@lru_cache(maxsize=256)
def _run(geo: ConvGeometry, arrivals: bytes) -> tuple[np.ndarray, np.ndarray]:
    """`ConvSchedule.run`, remembered: the pipeline asks for the same sample repeatedly."""
    taken, out = ConvSchedule(geo).run(np.frombuffer(arrivals, dtype=np.int64))
    taken.flags.writeable = out.flags.writeable = False
    return taken, out


class _Control:
    """`_State` behind the interface of `perfmodel.blocks` controls."""

    def __init__(self, st: _State) -> None:
        self.st = st

    def valid(self) -> list[bool]:
        return [self.st.mac.left != 0]

    def registers(self) -> tuple:
        return self.st.registers()

    def ready(self, valids: list[bool], oready: list[bool]) -> list[bool]:
        return [self.st.ready()]

    def step(self, takes: list[bool], oready: list[bool]) -> None:
        self.st.step(takes[0], oready[0])

    def quiet(self, valids: list[bool], oready: list[bool]) -> int:
        return self.st.quiet(valids[0], oready[0])

    def skip(self, n: int, valids: list[bool], oready: list[bool]) -> None:
        self.st.advance(n, valids[0], oready[0])


class _State:
    """The block's registers, and one clock cycle of its control (mirrors the RTL). The
    window term (ky, kx, c) is kept as one index `term` = (ky * KW + kx) * C + c; `need`
    and `last_px` follow from the pixel (oy, ox)."""

    def __init__(self, g: ConvGeometry, arrivals: np.ndarray) -> None:
        self.g, self.arr, self.n_arr = g, arrivals.tolist(), len(arrivals)
        # the running maximum of arr[j] - j (see `window`)
        self.late = np.maximum.accumulate(arrivals - np.arange(self.n_arr)).tolist()
        self.taken: list[int] = []  # recorded while k < len(arrivals)
        self.out: list[int] = []  # recorded up to `frames` samples
        self.out_max = self.n_arr // g.frame_in * g.frame_out
        self.t = self.k = self.n_out = 0
        self.wy = self.wcol = self.wcount = self.fw = 0  # writer
        self.fc = self.oy = self.ox = self.gi = self.term = 0  # compute
        self.y_top, self.x_left = -g.ph, -g.pw
        self.mac = MacPipe(g.p)  # the pipeline behind the issue, the output register
        self._pixel()

    @property
    def left(self) -> int:
        return self.mac.left

    def registers(self) -> tuple:
        """What the next cycles depend on (see `perfmodel.steady.registers`): every
        register, the two frame bits only as equal or not, without `ConvSchedule.run`'s
        cycle and counts."""
        mac = self.mac
        return (self.fw ^ self.fc, self.wy, self.wcol, self.wcount, self.oy, self.ox,
                self.gi, self.term, mac.v, mac.last, mac.left)  # fmt: skip

    def cycle(self) -> None:
        k = self.k
        offered = k < self.n_arr and self.arr[k] <= self.t
        if self.step(offered, True) and (offered or k == self.n_arr):
            raise RuntimeError(f"conv2d schedule deadlocks at cycle {self.t - 1}: {self.g}")

    def step(self, offered: bool, ready: bool) -> bool:
        """One clock cycle: input offered or not, output ready or not. Returns True when
        nothing moved (no transfer, no term issued, nothing in flight)."""
        mac = self.mac
        take = offered and self.ready()
        go = self._go() and not mac.stall
        stuck = not (take or go or mac.busy)
        if mac.left and ready:
            if self.n_out < self.out_max:
                self.out.append(self.t)
            self.n_out += 1
        mac.step(go, self.term == self.g.terms - 1, ready)
        if take:
            self._write()
        if go:
            self._advance()
        self.t += 1
        return stuck

    def quiet(self, offered: bool, ready: bool) -> int:
        """How many cycles, the input offered or not and the output ready or not
        throughout, step only counters (`advance`): no group's last term issued or
        loaded, no writer row ended, no result loaded, the last waiting one not taken,
        and the first term of a pixel kept waiting (or not) for its input. Through them,
        `valid` and `ready` stay as they are."""
        mac, g = self.mac, self.g
        q = mac.quiet(ready)
        take = offered and self.ready()
        if take:
            q = min(q, g.wc - 1 - self.wcol)
        if self._go():
            if not mac.stall:
                q = min(q, g.terms - 1 - self.term)
        elif take and not self.last_px:
            q = min(q, self.need + 1 - self.wcount)
        return max(q, 0)

    def advance(self, n: int, offered: bool, ready: bool) -> None:
        """`n` cycles at once, no more than `quiet` allows: the same as `step` n times."""
        mac = self.mac
        take = offered and self.ready()
        go = self._go() and not mac.stall
        t = self.t
        if mac.left and ready:
            m = min(n, self.out_max - self.n_out)
            if m > 0:
                self.out.extend(range(t, t + m))
            self.n_out += n
        mac.advance(n, go, ready)
        if take:
            m = min(n, self.n_arr - self.k)
            if m > 0:
                self.taken.extend(range(t, t + m))
            self.k += n
            self.wcount += n
            self.wcol += n
        if go:
            self.term += n
        self.t = t + n

    def next(self) -> None:
        """For `ConvSchedule`: the cycles `window` allows at once, else one."""
        q = self.window()
        if 2 <= q < QUIET:
            k = self.k
            self.advance(q, k < self.n_arr and self.arr[k] <= self.t, True)
        else:
            self.cycle()

    def window(self) -> int:
        """`quiet` for `ConvSchedule.run`: the output ready, input k offered from
        arrivals[k], so no longer than the input is offered (or not) throughout: input j
        is late at cycle t + (j - k) where arr[j] - j > t - k, the first such j found in
        the running maximum of arr[j] - j (the earlier inputs were all taken in time)."""
        k, t = self.k, self.t
        offered = k < self.n_arr and self.arr[k] <= t
        q = self.quiet(offered, True)
        if k < self.n_arr and not offered:
            q = min(q, self.arr[k] - t)
        elif offered and q > 1 and self.ready():
            q = min(q, self.n_arr - k, bisect_right(self.late, t - k) - k)
        return q

    def ready(self) -> bool:
        """The line buffer takes the next input element."""
        g, wy = self.g, self.wy
        if wy > g.y_end:
            return True
        lo = min(max(self.y_top, 0), g.lo_max)
        return (g.h_used + wy if self.fw != self.fc else wy) < lo + g.rows

    def _go(self) -> bool:
        """A term can issue: its window's input is in (checked at a pixel's first term)."""
        if self.term or self.gi or self.fw != self.fc:
            return True
        return not self.last_px and self.wcount > self.need

    def _pixel(self) -> None:
        g = self.g
        self.need = g.need(self.y_top, self.x_left)
        self.last_px = self.oy == g.oh - 1 and self.ox == g.ow - 1

    def _write(self) -> None:
        g = self.g
        if self.k < self.n_arr:
            self.taken.append(self.t)
        self.k += 1
        self.wcount += 1
        self.wcol += 1
        if self.wcol == g.wc:
            self.wcol = 0
            self.wy += 1
            if self.wy == g.h:
                self.wy = self.wcount = 0
                self.fw ^= 1

    def _advance(self) -> None:
        """Step the window term, then the group, the pixel, the row and the frame."""
        g = self.g
        self.term += 1
        if self.term < g.terms:
            return
        self.term = 0
        self.gi += 1
        if self.gi < g.groups:
            return
        self.gi = 0
        self.ox += 1
        self.x_left += g.sw
        if self.ox == g.ow:
            self.ox, self.x_left = 0, -g.pw
            self.oy += 1
            self.y_top += g.sh
            if self.oy == g.oh:
                self.oy, self.y_top = 0, -g.ph
                self.fc ^= 1
        self._pixel()
