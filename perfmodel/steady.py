"""The pipeline's steady state: every block's control stepped together.

Sample 0's timing composes from each block's `timing` (the pipeline puts FIFOs where
a block would stall its producer within a sample). Consecutive samples interact: a
convolution whose line buffer is full stops taking its input while it still reads
rows, its producer's output register fills and that producer stops too, so the next
sample reaches the slow block later than at full rate. `first_outputs` models that:
it steps every block's control (`timing.control()`, see `perfmodel.blocks`) together,
with valid and ready between them, the input always offered and the output always
ready, and records each sample's first input and first output transfer. A control
need not be stepped one cycle at a time through cycles in which it only counts (its
`quiet` cycles: its valid and ready stay as they are while its inputs do); it is
stepped through them at once (`skip`), and only when it is no longer quiet, or a
neighbour's valid or ready changes, is it stepped alone or asked again (`_events`).
A run of elementwise stages and the FIFO behind them is one control there
(`perfmodel.chain.Chain`): a gap in its producer's valid is one event, not one per
stage. The controls' tests hold `quiet` and `skip` to `step`, and these to stepping
every stage's own control every cycle (`_cycles`, `skip=False`).

`steady_interval` is the difference between consecutive samples' first outputs once
it repeats: the first of 4, 6, ..., `MAX_SAMPLES` samples whose last three differences
are equal, else the last at `MAX_SAMPLES`. It need not step them all: the pipeline is
deterministic, so once every block's registers at one sample's first input transfer
are those at the previous sample's (`registers`), everything after repeats with that
period, and the remaining first outputs follow from the ones stepped. Where a block
takes several cycles per input element, the registers are compared at a few input
transfers of each sample (`_checks`), each with the same transfer of the samples
before: the state may repeat within a sample, before the next one's first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from itertools import pairwise
from typing import Any

import numpy as np
from cosyn.perfmodel.chain import Chain, chainable
from cosyn.perfmodel.mac import QUIET

__all__ = ["fifo_peaks", "first_outputs", "registers", "steady_interval"]

MIN_SAMPLES = 4
MAX_SAMPLES = 12
CHECKS = 4  # input transfers a sample at which `_steady_interval` compares the registers


class _Joint:
    """Every stage's control with its wiring, a run of elementwise stages and the FIFO
    behind them as one control (`Chain`) where `chains`. Index n (the control count)
    stands for the design's input as a producer and for its output as a consumer."""

    def __init__(self, p: Any, chains: bool = True) -> None:
        stages = p.stages
        groups = _chains(p) if chains else [[k] for k in range(len(stages))]
        timings = [[stages[k].timing for k in g] for g in groups]
        unit = {k: u for u, g in enumerate(groups) for k in g}
        n = len(groups)

        def producer(x: Any) -> tuple[int, int]:
            return (n, 0) if x.stage is None else (unit[x.stage], x.port)

        self.n, self.n_in, self.n_out = n, p.source.elements, p.sink.elements
        self.groups = groups
        self.models = [t[0].control() if len(t) == 1 else Chain(t) for t in timings]
        self.srcs = [[producer(x) for x in stages[g[0]].inputs] for g in groups]
        cons: list[list[Any]] = [[None] * t[-1].outputs for t in timings] + [[None]]
        for k, src in enumerate(self.srcs):
            for j, (a, b) in enumerate(src):
                cons[a][b] = (k, j)
        self.sink = producer(p.sink)
        cons[self.sink[0]][self.sink[1]] = (n, 0)
        self.cons, self.src_cons = cons[:n], cons[n][0]

    def run(
        self, samples: int | None, skip: bool = True, every: int | None = None
    ) -> Iterator[tuple[int, int, int]]:
        """Step every control until `samples` samples (None: no end) have left; yields
        (0, cycle, outputs so far) at each sample's first input transfer, before the
        cycle is stepped (every control then at that cycle), and (1, cycle, outputs so
        far) at each first output transfer; with `every` (which divides a sample's
        inputs), also (2, cycle, outputs so far) at every `every`-th input transfer
        within a sample, as at the first. With `skip`, each control is stepped only at
        the cycles it is not `quiet` and through cycles it is at once (`_events`);
        without, every control every cycle (`_cycles`, which takes no `every`)."""
        total = (QUIET, QUIET) if samples is None else (samples, samples)
        if skip:
            yield from self._events(total[0] * self.n_in, total[1] * self.n_out, every or self.n_in)
        else:
            yield from self._cycles(total[0] * self.n_in, total[1] * self.n_out)

    def _cycles(self, total_in: int, total_out: int) -> Iterator[tuple[int, int, int]]:
        n, n_in, n_out, models = self.n, self.n_in, self.n_out, self.models
        sc_k, sc_j = self.src_cons
        sk_k, sk_j = self.sink
        wiring = list(zip(models, self.srcs, self.cons, strict=True))
        limit = self._limit(total_in)
        sent = got = t = 0
        ivs: list[Any] = [None] * n
        ors: list[Any] = [None] * n
        while True:
            if t > limit:
                raise RuntimeError(f"the pipeline does not finish in {t} cycles")
            src_valid = sent < total_in
            valids = [m.valid() for m in models]
            valids.append([src_valid])
            readies: list[Any] = [None] * n
            readies.append([True])
            for k in range(n - 1, -1, -1):
                m, src, con = wiring[k]
                ors[k] = orr = [readies[a][b] for a, b in con]
                ivs[k] = iv = [valids[a][b] for a, b in src]
                readies[k] = m.ready(iv, orr)
            if src_valid and readies[sc_k][sc_j]:
                if sent % n_in == 0:
                    yield 0, t, got
                sent += 1
            if valids[sk_k][sk_j]:
                if got % n_out == 0:
                    yield 1, t, got
                got += 1
                if got == total_out:
                    return
            for k in range(n):
                models[k].step([v and r for v, r in zip(ivs[k], readies[k], strict=True)], ors[k])
            t += 1

    def _limit(self, total_in: int) -> int:
        """The last cycle a run of `total_in` inputs may take (no limit without end)."""
        if total_in >= QUIET:
            return QUIET
        return 1_000_000 + 50 * (total_in // self.n_in) * (self.n_in + self.n_out) * max(self.n, 1)

    def _events(self, total_in: int, total_out: int, every: int) -> Iterator[tuple[int, int, int]]:
        """`_cycles`, each control stepped lazily: at[k] is the cycle its state is at, its
        inputs (iv, orr) and outputs (val, rdy) hold from there until due[k], the first
        cycle it is not quiet. At each such cycle the due controls step; the others
        whose inputs then change catch up (`skip`) and are asked again."""
        n, n_in, n_out, models = self.n, self.n_in, self.n_out, self.models
        srcs, cons = self.srcs, self.cons
        (sc_k, sc_j), (sk_k, sk_j) = self.src_cons, self.sink
        users = [sorted({c for c, _ in con if c < n}) for con in cons]
        makers = [sorted({a for a, _ in src if a < n}) for src in srcs]
        valid, ready = [m.valid for m in models], [m.ready for m in models]
        step, skip, quiet = (
            [m.step for m in models],
            [m.skip for m in models],
            [m.quiet for m in models],
        )
        val: list[Any] = [v() for v in valid] + [[total_in > 0]]
        rdy: list[Any] = [None] * n + [[True]]
        iv: list[Any] = [None] * n
        orr: list[Any] = [None] * n
        for k in range(n - 1, -1, -1):
            orr[k] = [rdy[c][j] for c, j in cons[k]]
            iv[k] = [val[a][b] for a, b in srcs[k]]
            rdy[k] = ready[k](iv[k], orr[k])
        at = [0] * n
        due = [quiet[k](iv[k], orr[k]) for k in range(n)] + [QUIET]
        one = [len(src) == 1 and len(con) == 1 for src, con in zip(srcs, cons, strict=True)]
        wire = [(*s[0], *c[0]) if o else None for s, c, o in zip(srcs, cons, one, strict=True)]
        limit = self._limit(total_in)
        sent = got = base = 0  # transfers in and out before cycle `base`
        while True:
            take, out = val[n][0] and rdy[sc_k][sc_j], val[sk_k][sk_j]
            t = min(due)
            if take:
                t = min(t, base + -sent % every, base + total_in - sent - 1)
            if out:
                t = min(t, base + -got % n_out, base + total_out - got - 1)
            if t >= QUIET:
                raise RuntimeError(f"the pipeline deadlocks at cycle {base}")
            if t > limit:
                raise RuntimeError(f"the pipeline does not finish in {t} cycles")
            if out:
                got += t - base
            if take:
                sent += t - base
                if sent % every == 0:
                    for k in range(n):
                        if at[k] < t:
                            skip[k](t - at[k], iv[k], orr[k])
                            at[k] = t
                    yield (0 if sent % n_in == 0 else 2), t, got
                sent += 1
            if out:
                if got % n_out == 0:
                    yield 1, t, got
                if got + 1 == total_out:
                    return
                got += 1
            base = t + 1
            if due.count(t) == 1:
                stepped = [due.index(t)]
            else:
                stepped = [k for k, d in enumerate(due) if d == t]
            mark = set(stepped)
            for k in stepped:
                if at[k] < t:
                    skip[k](t - at[k], iv[k], orr[k])
                if one[k]:
                    step[k]([iv[k][0] and rdy[k][0]], orr[k])
                else:
                    step[k]([v and r for v, r in zip(iv[k], rdy[k], strict=True)], orr[k])
                at[k] = base
                new = valid[k]()
                if new != val[k]:
                    val[k] = new
                    mark.update(users[k])
            if (sent < total_in) != val[n][0]:
                val[n] = [sent < total_in]
                if sc_k < n:
                    mark.add(sc_k)
            while mark:  # consumers first: a changed ready marks producers, all earlier
                k = max(mark)
                mark.remove(k)
                if at[k] <= t:
                    skip[k](base - at[k], iv[k], orr[k])
                    at[k] = base
                if one[k]:
                    a, b, c, j = wire[k]
                    ivk = iv[k] = [val[a][b]]
                    ork = orr[k] = [rdy[c][j]]
                else:
                    ivk = iv[k] = [val[a][b] for a, b in srcs[k]]
                    ork = orr[k] = [rdy[c][j] for c, j in cons[k]]
                new = ready[k](ivk, ork)
                if new != rdy[k]:
                    rdy[k] = new
                    mark.update(makers[k])
                due[k] = base + quiet[k](ivk, ork)


def _chains(p: Any) -> list[list[int]]:
    """The plan's stages in groups of consecutive ones: a run that makes a `Chain` (each
    stage the next one's only input, and read by it alone), else one stage."""
    reads = [(x.stage, x.port) for s in p.stages for x in s.inputs] + [(p.sink.stage, p.sink.port)]
    groups: list[list[int]] = []
    for k, s in enumerate(p.stages):
        g = groups[-1] if groups else []
        fed = len(s.inputs) == 1 and s.inputs[0].stage == k - 1 and reads.count((k - 1, 0)) == 1
        if fed and chainable([p.stages[i].timing for i in g] + [s.timing]):
            g.append(k)
        else:
            groups.append([k])
    return groups


def first_outputs(p: Any, samples: int, skip: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(cycle of each sample's first input transfer, cycle of its first output transfer)
    when `samples` samples stream through the plan `p`, the input always offered and
    the output always ready (`skip`: see `_Joint.run`; with it, runs of elementwise
    stages and a FIFO are stepped as one `Chain`; without, every stage's own control
    every cycle)."""
    firsts: tuple[list[int], list[int]] = ([], [])
    for kind, t, _ in _Joint(p, chains=skip).run(samples, skip):
        firsts[kind].append(t)
    return np.array(firsts[0]), np.array(firsts[1])


def registers(x: Any) -> Any:
    """The state of a control as a hashable value: its `registers()` where it names
    them, else its attributes, recursively, without recorded cycles (arrays)."""
    if isinstance(x, (bool, int, str, type(None))):
        return x
    if isinstance(x, (list, tuple)):
        return tuple(registers(v) for v in x)
    if isinstance(x, np.ndarray):
        return None
    if dataclasses.is_dataclass(x) and x.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        return x
    if hasattr(x, "registers"):
        return registers(x.registers())
    return tuple((k, registers(v)) for k, v in vars(x).items())


def steady_interval(p: Any) -> int:
    """Cycles between consecutive samples' first outputs in steady state: several
    samples through every block's cycle model, until the difference repeats. Plans of
    the same structure and block timings share the answer (`_key`)."""
    key = _key(p)
    if key not in _CACHE:
        if len(_CACHE) >= CACHE_SIZE:
            _CACHE.clear()
        _CACHE[key] = _steady_interval(p)
    return _CACHE[key]


CACHE_SIZE = 4096
_CACHE: dict[tuple, int] = {}


def _key(p: Any) -> tuple:
    """What the steady state depends on: each stage's timing and where its inputs come
    from, the design's input and output."""
    stages = tuple((s.timing.key, tuple((x.stage, x.port) for x in s.inputs)) for s in p.stages)
    return stages, p.source.elements, p.sink.elements, (p.sink.stage, p.sink.port)


def fifo_peaks(p: Any) -> tuple[int, dict[int, int]]:
    """The steady interval, and the most each FIFO stage (by its index in `p.stages`)
    holds while it is found: at every time where the registers repeated (the levels
    after that repeat the ones stepped), else in the samples stepped."""
    joint = _Joint(p)
    interval = _steady_interval(p, joint)
    peaks = {}
    for model, group in zip(joint.models, joint.groups, strict=True):
        k = group[-1]
        if p.stages[k].kind == "fifo":
            peaks[k] = (model if len(group) == 1 else model.fifo).peak
    return interval, peaks


def _steady_interval(p: Any, joint: _Joint | None = None) -> int:
    """`_rule` over the first outputs of samples streamed without end: stepped until the
    rule decides, or until the registers at a sample's first input transfer repeat those
    at an earlier sample's (m samples and D cycles before) and the first output m
    samples back lies after that earlier one: every later first output is then D
    cycles after the one m samples before it. Where a block takes several cycles per
    input element (`_checks`), the registers are compared at more input transfers of a
    sample (each with the same transfer of the earlier samples), as the state may
    repeat within a sample before it does at the next one's first. `joint`: the
    controls to step (a new `_Joint(p)` without)."""
    joint = joint or _Joint(p)
    checks = _checks(p, joint.n_in)
    outs: list[int] = []
    seen: dict[Any, tuple[int, int]] = {}
    check, repeat = 0, None  # repeat: (cycle the repeated state began, samples, cycles)
    for kind, t, got in joint.run(None, every=joint.n_in // checks):
        if kind == 1:
            outs.append(t)
            interval = _rule(outs)
            if interval is not None:
                return interval
        elif repeat is None:
            sample, phase = divmod(check, checks)
            state = (registers(joint.models), phase, got - sample * joint.n_out)
            if state in seen:
                i, t0 = seen[state]
                repeat = (t0, sample - i, t - t0)
            seen[state] = (sample, t)
            check += 1
        if repeat is not None:
            t0, m, d = repeat
            if len(outs) >= m and outs[-m] >= t0:
                while len(outs) < MAX_SAMPLES:
                    outs.append(outs[-m] + d)
                return _rule(outs)
    raise AssertionError("the input never ends")


def _checks(p: Any, n_in: int) -> int:
    """At how many input transfers of a sample (evenly apart, the first among them) the
    steady state compares the registers: `CHECKS` where the slowest block takes more than
    `CHECKS` cycles per input element (and they divide a sample's), else the first only
    (comparing costs about as much as the events of a sample at the input's rate)."""
    slow = max((int(s.timing.interval) for s in p.stages), default=0) > CHECKS * n_in
    return CHECKS if slow and n_in % CHECKS == 0 else 1


def _rule(outs: list[int]) -> int | None:
    """The interval from the first outputs so far, or None while they do not decide it:
    the first of 4, 6, ..., MAX_SAMPLES samples whose last three differences of first
    outputs are equal gives it, else the last difference at MAX_SAMPLES."""
    for samples in range(MIN_SAMPLES, MAX_SAMPLES + 1, 2):
        if len(outs) < samples:
            return None
        d = [b - a for a, b in pairwise(outs[:samples])]
        if samples >= MAX_SAMPLES or d[-1] == d[-2] == d[-3]:
            return int(d[-1])
    return None
