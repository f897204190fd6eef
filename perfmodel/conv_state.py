"""The cycle model of `Conv2dBlock`'s control (`perfmodel.conv`): its registers, stepped
one clock at a time (`step`), and its shortcuts: `quiet` and `advance`, cycles that
only count, and whole pixels at once where the control provably repeats.

A pixel's period runs from the cycle its first term issues (its anchor) to the next
pixel's. When no input is taken, the output's ready holds and the next pixel's window
is in, what happens in a period depends only on the multiply-accumulate pipeline at
its anchor (`MacPipe`: the terms then issue whenever it does not stall). So when the
pipeline at an anchor is what it was at the previous pixel's, in the same row, every
later pixel of the row whose window is in repeats that period: the same cycles, the
same outputs, D cycles later (`_period`, `_jump`). Tests hold `quiet` and `advance`
to `step` from states reached under held inputs.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import TYPE_CHECKING

import numpy as np
from cosyn.perfmodel.mac import QUIET, MacPipe, mac_stages

if TYPE_CHECKING:
    from cosyn.perfmodel.conv import ConvGeometry

__all__ = ["Control", "State"]


class Control:
    """`State` behind the interface of `perfmodel.blocks` controls."""

    def __init__(self, st: State) -> None:
        self.st = st

    def valid(self) -> list[bool]:
        return [self.st.mac.left != 0]

    def registers(self) -> tuple:
        return self.st.registers()

    def ready(self, valids: list[bool], oready: list[bool]) -> list[bool]:
        return [self.st._rdy]

    def step(self, takes: list[bool], oready: list[bool]) -> None:
        self.st.step(takes[0], oready[0])

    def quiet(self, valids: list[bool], oready: list[bool]) -> int:
        return self.st.quiet(valids[0], oready[0])

    def skip(self, n: int, valids: list[bool], oready: list[bool]) -> None:
        self.st.advance(n, valids[0], oready[0])


class State:
    """The block's registers, and one clock cycle of its control (mirrors the RTL). The
    window term (ky, kx, c) is kept as one index `term` = (ky * KW + kx) * C + c (where the
    block skips zero weights, the index among the `nt` terms group gi issues); `need`
    and `last_px` follow from the pixel (oy, ox). What `_period` reads of the past (the
    last anchor `_a`, the cycles since which the output's ready and valid hold and the
    last input taken) is history, not registers."""

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
        self.nt = g.issued[0]  # the terms group gi issues
        self.y_top, self.x_left = -g.ph, -g.pw
        # the pipeline behind the issue, the output register
        self.mac = MacPipe(g.p, g.short, mac_stages(g.simd))
        self._pixel()
        self._row()
        self._a: tuple | None = None  # (pipeline, cycle, ox, oy, fc, outputs before)
        self._oready: bool | None = None
        self._since = self._vsince = self._took = 0

    def registers(self) -> tuple:
        """What the next cycles depend on (see `perfmodel.steady.registers`): every
        register, the two frame bits only as equal or not, without `ConvSchedule.run`'s
        cycle and counts."""
        mac = self.mac
        return (self.fw ^ self.fc, self.wy, self.wcol, self.wcount, self.oy, self.ox,
                self.gi, self.term, mac.v, mac.last, mac.fin, mac.left)  # fmt: skip

    def cycle(self) -> None:
        k = self.k
        offered = k < self.n_arr and self.arr[k] <= self.t
        if self.step(offered, True) and (offered or k == self.n_arr):
            raise RuntimeError(f"conv2d schedule deadlocks at cycle {self.t - 1}: {self.g}")

    def step(self, offered: bool, ready: bool) -> bool:
        """One clock cycle: input offered or not, output ready or not. Returns True when
        nothing moved (no transfer, no term issued, nothing in flight)."""
        mac, t = self.mac, self.t
        if ready != self._oready:  # `_hold`, inline: the hot path of the steady state
            self._oready, self._since = ready, t
        take = offered and self._rdy
        left, term = mac.left, self.term
        go = self._go() and not (mac.last & mac.end and left >= 2)
        valid = left != 0
        stuck = not (take or go or valid or mac.v)
        if go and not term and not self.gi:
            self._anchor(t)
        if valid and ready:
            if self.n_out < self.out_max:
                self.out.append(t)
            self.n_out += 1
        mac.step(go, term == self.nt - 1, ready, self.gi == self.g.groups - 1)
        if (mac.left != 0) != valid:
            self._vsince = t + 1
        if take:
            self._write()
        if go:
            self._advance()
        self.t = t + 1
        return stuck

    def quiet(self, offered: bool, ready: bool, steady: bool = True) -> int:
        """How many cycles, the input offered or not and the output ready or not
        throughout, step only counters (`advance`): no group's last term issued (but
        one followed by another group of the pixel, `_issues`) or loaded, no writer
        row ended, no result loaded, the last waiting one not taken, and the first term
        of a pixel kept waiting (or not) for its input; or, at an anchor, whole periods
        (`_period`). Through them, `valid` (where `steady`) and `ready` stay as they are."""
        q = self._quiet(offered, ready)
        if self.term or self.gi:  # not at an anchor: no period (`_period`'s first test)
            return q
        per = self._period(offered, ready, steady)
        return max(q, per[0] * per[1]) if per else q

    def advance(self, n: int, offered: bool, ready: bool) -> None:
        """`n` cycles at once, no more than `quiet` allows: the same as `step` n times."""
        if n <= self._quiet(offered, ready):
            self._count(n, offered, ready)
        else:
            self._periods(n, self._period(offered, ready, False), offered, ready)

    def _periods(self, n: int, per: tuple | None, offered: bool, ready: bool) -> None:
        """`n` cycles beyond `_quiet`, within the periods `_period` allows."""
        assert per is not None and n <= per[0] * per[1], "advance beyond quiet"
        d = per[1]
        self._jump(n // d, d)
        n %= d
        while n:  # the rest of a period, as `step` goes
            q = min(self._quiet(offered, ready), n)
            if q:
                self._count(q, offered, ready)
            else:
                self.step(offered, ready)
                q = 1
            n -= q

    def next(self) -> None:
        """For `ConvSchedule`: the cycles `quiet` allows at once (the output ready, input
        k offered from arrivals[k]), else one. While the line buffer takes input k
        offered now, the count goes on through the gaps between arrivals (`_takes`);
        else it ends when input k arrives."""
        k, t = self.k, self.t
        offered = k < self.n_arr and self.arr[k] <= t
        if offered and self._rdy:
            self._takes()
            return
        q = counts = self._quiet(offered, True)
        per = None if self.term or self.gi else self._period(offered, True, False)
        if per:
            q = max(q, per[0] * per[1])
        if k < self.n_arr and not offered:
            q = min(q, self.arr[k] - t)
        if q < 2 or q >= QUIET:
            self.cycle()
        elif q <= counts:
            self._count(q, offered, True)
        else:
            self._periods(q, per, offered, True)

    def _takes(self) -> None:
        """For `next`, input k offered and the line buffer ready: the cycles that only
        count (`_quiet`'s limits in cycles) while the inputs are taken as they arrive,
        gaps between them included: input j at T_j = max(arr[j], T_{j-1} + 1) = j +
        max(t - k, late[j]) (the inputs before k were taken by T_j - (j - k + 1), so
        late[j], the running maximum of arr[i] - i, is theirs only where it is at most
        t - k). Up to and with the last input before a row's last, the last of the
        window the waiting pixel needs, or the input's end (`_quiet`'s limits in
        inputs); else one cycle."""
        k, t, g, late = self.k, self.t, self.g, self.late
        q = self._quiet(False, True)  # the limits in cycles, without those in inputs
        m = min(g.wc - 1 - self.wcol, self.n_arr - k)  # inputs the count may take
        waits = not (self.term or self.gi or self.fw != self.fc or self.last_px)
        if waits and self.wcount <= self.need:  # the pixel waits for its window (`_go`)
            m = min(m, self.need + 1 - self.wcount)
        tk = t - k
        if m <= 0:
            q = 0
        elif late[k + m - 1] <= tk:  # each taken in the cycle after the one before
            q = min(q, m)
            if 2 <= q < QUIET:
                self._count(q, True, True)
                return
        else:  # up to and with input k + m - 1
            q = min(q, k + m + late[k + m - 1] - t)
        if q < 2 or q >= QUIET:
            self.cycle()
            return
        end = t + q  # the inputs taken before it
        on = bisect_right(late, tk, k, k + m)  # those before `on` in the cycle after the last
        times = list(range(t, min(t + on - k, end)))
        times += [j + late[j] for j in range(on, k + m) if j + late[j] < end]
        self._count_takes(q, times)

    def _count_takes(self, n: int, times: list[int]) -> None:
        """`_count` of `n` cycles, the output ready, inputs taken at `times` only (two
        counts where the terms issued reach the next group, as in `_count`)."""
        mac, t = self.mac, self.t
        if self.term + n > self.nt and self._go() and not (mac.last & mac.end and mac.left >= 2):
            first = self.nt - self.term
            cut = bisect_left(times, t + first)
            self._count_takes(first, times[:cut])
            n, times = n - first, times[cut:]
            t = self.t
        if self._oready is not True:  # `_hold`, inline
            self._oready, self._since = True, t
        go = self._go() and not (mac.last & mac.end and mac.left >= 2)
        if go and not self.term and not self.gi:
            self._anchor(t)
        if mac.left:
            m = min(n, self.out_max - self.n_out)
            if m > 0:
                self.out.extend(range(t, t + m))
            self.n_out += n
        mac.advance(n, go, True)
        if times:
            m = len(times)
            self.taken.extend(times)
            self.k += m
            self.wcount += m
            self.wcol += m
            self._took = times[-1]
        if go:
            self.term += n
            if self.term == self.nt:  # the group's last issued in the last cycle
                mac.last |= 1
                mac.fin |= self.gi == self.g.groups - 1
                self.term -= 1
                self._advance()
        self.t = t + n

    def ready(self) -> bool:
        """The line buffer takes the next input element."""
        return self._rdy

    def _row(self) -> None:
        """`ready`, which changes only with a row written or a row of windows begun."""
        g, wy = self.g, self.wy
        lo = min(max(self.y_top, 0), g.lo_max)
        self._rdy = wy > g.y_end or (g.h_used + wy if self.fw != self.fc else wy) < lo + g.rows

    def _quiet(self, offered: bool, ready: bool) -> int:
        mac, g = self.mac, self.g
        q = mac.quiet(ready)
        take = offered and self._rdy
        if take:
            q = min(q, g.wc - 1 - self.wcol)
        go = self.term or self.gi or self.fw != self.fc  # `_go`, inline
        if go or (not self.last_px and self.wcount > self.need):
            if not (mac.last & mac.end and mac.left >= 2):
                q = min(q, self._issues() if self.gi + 1 < g.groups else self.nt - 1 - self.term)
        elif take and not self.last_px:
            q = min(q, self.need + 1 - self.wcount)
        return q if q > 0 else 0

    def _count(self, n: int, offered: bool, ready: bool) -> None:
        """`n` cycles that only count (no more than `_quiet`); where the terms issued
        reach the pixel's next group (`_issues`), as two counts, the first to its first
        term."""
        mac, t = self.mac, self.t
        if self.term + n > self.nt and self._go() and not (mac.last & mac.end and mac.left >= 2):
            first = self.nt - self.term
            self._count(first, offered, ready)
            n -= first
            t = self.t
        if ready != self._oready:  # `_hold`, inline
            self._oready, self._since = ready, t
        take = offered and self._rdy
        go = self._go() and not (mac.last & mac.end and mac.left >= 2)
        if go and not self.term and not self.gi:
            self._anchor(t)
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
            self._took = t + n - 1
        if go:
            self.term += n
            if self.term == self.nt:  # the group's last issued in the last cycle
                mac.last |= 1
                mac.fin |= self.gi == self.g.groups - 1
                self.term -= 1
                self._advance()
        self.t = t + n

    def _issues(self) -> int:
        """Cycles a count may issue terms: up to the group's last (r = terms - 1 - term
        cycles), or, where the pixel has another group, through its last (in cycle r)
        and on into the next, before that one's last term and before the flag of the
        last reaches the pipeline's end (`MacPipe.quiet`). A count never passes a
        pixel's first term (an anchor, where `_period` looks)."""
        g = self.g
        r = self.nt - 1 - self.term
        return r + min(g.issued[self.gi + 1], self.mac.stages) if self.gi + 1 < g.groups else r

    def _anchor(self, t: int) -> None:
        """A pixel's first term issues in cycle t: what `_period` compares, kept."""
        mac = self.mac
        self._a = ((mac.v, mac.last, mac.fin, mac.left), t, self.ox, self.oy, self.fc, self.n_out)

    def _hold(self, ready: bool) -> None:
        if ready != self._oready:
            self._oready, self._since = ready, self.t

    def _period(self, offered: bool, ready: bool, steady: bool) -> tuple[int, int] | None:
        """(whole periods that repeat from here, cycles per period), or None: at an
        anchor whose pipeline is the previous pixel's (in the same row and frame), no
        input taken since nor now, the output's ready (and, where `steady`, valid) held
        since; as many pixels as lie before the row's end whose window is in."""
        a = self._a
        if a is None or self.term or self.gi or a[2] != self.ox - 1 or a[3] != self.oy:
            return None
        mac, t0 = self.mac, a[1]
        if a[4] != self.fc or a[0] != (mac.v, mac.last, mac.fin, mac.left) or self._took >= t0:
            return None
        if ready != self._oready or self._since > t0 or (steady and self._vsince > t0):
            return None
        if (offered and self._rdy) or not self._go() or mac.stall:
            return None
        g = self.g
        base = self.oy * g.ow
        if self.fw != self.fc:
            last = g.ow - 1
        else:  # the last pixel whose window is in (the frame's last waits for the next)
            last = bisect_left(g.need_list, self.wcount, base, base + g.ow) - 1 - base
            if self.oy == g.oh - 1:
                last = min(last, g.ow - 2)
        k = last - self.ox
        return (k, t - t0) if k > 0 and (t := self.t) > t0 else None

    def _jump(self, j: int, d: int) -> None:
        """`j` periods of `d` cycles at once (`_period` allows them): the pixel moves on,
        the outputs repeat the last period's."""
        g, a = self.g, self._a
        assert a is not None
        per = self.n_out - a[5]
        if self.n_out < self.out_max:
            ref = self.out[a[5] :]
            more = [c + i * d for i in range(1, j + 1) for c in ref]
            self.out.extend(more[: self.out_max - self.n_out])
        self.n_out += j * per
        if self._vsince > a[1]:  # valid changed within the period: last in the last one
            self._vsince += j * d
        self.t += j * d
        self.ox += j
        self.x_left += j * g.sw
        self._pixel()
        self._a = (a[0], self.t - d, self.ox - 1, self.oy, self.fc, self.n_out - per)

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
        self._took = self.t
        self.k += 1
        self.wcount += 1
        self.wcol += 1
        if self.wcol == g.wc:
            self.wcol = 0
            self.wy += 1
            if self.wy == g.h:
                self.wy = self.wcount = 0
                self.fw ^= 1
            self._row()

    def _advance(self) -> None:
        """Step the window term, then the group, the pixel, the row and the frame."""
        g = self.g
        self.term += 1
        if self.term < self.nt:
            return
        self.term = 0
        self.gi += 1
        if self.gi < g.groups:
            self.nt = g.issued[self.gi]
            return
        self.gi, self.nt = 0, g.issued[0]
        self.ox += 1
        self.x_left += g.sw
        if self.ox == g.ow:
            self.ox, self.x_left = 0, -g.pw
            self.oy += 1
            self.y_top += g.sh
            if self.oy == g.oh:
                self.oy, self.y_top = 0, -g.ph
                self.fc ^= 1
            self._row()
        self._pixel()
