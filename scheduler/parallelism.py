"""Parallelism per node under a device budget: FINN's folding, chosen instead of written by hand.

A dense or conv2d node gets P lanes, each multiplying S terms a cycle (SIMD; P x S
multipliers; `perfmodel.pipeline.resolve_parallelism`: any P, a divisor of a group's
outputs for a grouped conv, S a divisor of an output's inputs at a window position);
its block then needs about MACs / (P x S) cycles per sample, and the pipeline's
interval is at least its slowest block's.
`allocate` balances the blocks:

- for an interval T, each node takes the choice of the fewest multipliers whose
  block's interval (its timing, `perfmodel.blocks`, the one definition the RTL is
  built from) is at most T, so no multiplier is added that does not shorten the
  interval (`_Search.choice`; a node's choices: `_choices`);
- with a target interval, T is the target: the fewest resources that meet it;
- with a target latency (a sample's cycles from its first input to its last output, the
  time its whole answer takes: `Estimate.completion`), the fewest resources that meet
  it. Latency adds up along the pipeline where the interval is the slowest block's, so
  this is not the longest interval that meets it: nodes are raised from parallelism 1,
  the one that buys the most cycles per resource first (`_Search.within_latency`);
- without one, T is the smallest interval whose allocation fits the budget (the device,
  a fraction of it, or resource limits), found by doubling and bisection over T:
  resources only grow as T shrinks.

The allocation is then planned and estimated as a whole (`perfmodel.estimate_plan`): its
interval is the steady state of every block stepped together, exact, which may exceed T
where a block stalls its producer across samples; every node then starts from its
largest P and is lowered while the interval holds (`_Search.settle`). Resources of one
block are estimated from its own primitives (`perfmodel.resources`); the FIFOs between
blocks are counted from the default plan's during the search and exactly in the final
estimate.

`design_parallelism` is the allocation `cosyn.rtl.generate` and `perfmodel.estimate`
take by default; `allocate_reuse` chooses the HLS backend's reuse factors the same way,
by hls4ml's documented multipliers and interval (`perfmodel.hls`).
"""

from __future__ import annotations

import dataclasses
import heapq
import json
from dataclasses import dataclass
from functools import cache

import numpy as np
from cosyn.perfmodel.blocks import TIMINGS
from cosyn.perfmodel.devices import Device
from cosyn.perfmodel.devices import device as device_
from cosyn.perfmodel.estimate import (
    RESOURCES,
    Estimate,
    coefficients,
    estimate_plan,
    folding_text,
)
from cosyn.perfmodel.hls import HLSLayer, hls_layer, mult_size, valid_reuse_factors
from cosyn.perfmodel.pipeline import (
    SIMD,
    Stage,
    folded,
    multipliers,
    parallelism_pair,
    plan,
    resolve_parallelism,
)
from cosyn.perfmodel.resources import Resources, cost, primitives
from rich.table import Table

from cosyn.errors import CosynError
from cosyn.ir.graph import Graph

__all__ = ["Allocation", "allocate", "allocate_reuse", "default_allocation", "design_parallelism"]


@dataclass
class Allocation:
    """The parallelism of each dense/conv2d node, the design's estimate with it, and the
    resource limits it was allocated under.

    `macs`: the multiply-accumulates per sample each node's block performs (a block that
    skips zero weights, `perfmodel.blocks.sparse_terms`, only its issued terms').
    `utilization` is the multipliers' busy fraction in steady state: MACs per sample of
    those nodes / (multipliers x interval)."""

    parallelism: dict[str, int | tuple[int, int]]  # P, or (P, S) with SIMD
    macs: dict[str, int]
    estimate: Estimate
    budget: dict[str, float]

    @property
    def interval(self) -> int:
        return self.estimate.interval

    @property
    def multipliers(self) -> int:
        return sum(map(multipliers, self.parallelism.values()))

    @property
    def utilization(self) -> float:
        busy = self.multipliers * self.interval
        return sum(self.macs.values()) / busy if busy else 0.0

    def table(self) -> Table:
        """One row per dense/conv2d node: outputs' multipliers, cycles, busy fraction."""
        t = Table(title=f"parallelism on {self.estimate.device}")
        for c in ("node", "kind", "MACs", "P", "interval", "busy", "LUT", "DSP"):
            t.add_column(c, justify="left" if c in ("node", "kind") else "right")
        rows = {n.name: n for n in self.estimate.nodes}
        for name, p in self.parallelism.items():
            n = rows[name]
            busy = self.macs[name] / (multipliers(p) * self.interval)
            t.add_row(name, n.kind, f"{self.macs[name]:,}", folding_text(p), str(n.interval),
                      f"{busy:.0%}", str(n.lut), str(n.dsp))  # fmt: skip
        e = self.estimate
        t.caption = (
            f"interval {e.interval} cycles, {self.multipliers} multipliers "
            f"{self.utilization:.0%} busy; LUT {e.lut:,}, FF {e.ff:,}, DSP {e.dsp}, "
            f"BRAM {e.bram}; {e.fit_message()}"
        )
        return t

    def to_json(self) -> str:
        d = {
            "parallelism": self.parallelism,
            "macs": self.macs,
            "interval": self.interval,
            "multipliers": self.multipliers,
            "utilization": self.utilization,
            "budget": self.budget,
            "estimate": json.loads(self.estimate.to_json()),
        }
        return json.dumps(d, indent=2) + "\n"


def allocate(
    g: Graph,
    device: str | Device = "ecp5-85f",
    target_interval: int | None = None,
    budget: float | dict[str, float] | None = None,
    target_latency: int | None = None,
) -> Allocation:
    """Each dense/conv2d node's parallelism for `cosyn.rtl.generate(g, parallelism=...)`:
    the smallest interval that fits `budget` on `device` with the fewest resources for it,
    or, given `target_interval` (cycles per sample), the fewest resources that meet it, or,
    given `target_latency` (cycles from a sample's first input to its last output), the
    fewest resources that meet it within the budget.

    `budget`: None (the whole device), a fraction of each of its resources, or limits
    by resource name ("lut", "ff", "dsp", "bram"; the others the device's)."""
    dev = device_(device)
    limits = _limits(dev, budget)
    for what, target in (("interval", target_interval), ("latency", target_latency)):
        if target is not None and (isinstance(target, bool) or not isinstance(target, int)
                                   or target < 1):  # fmt: skip
            raise CosynError(f"target {what} must be a positive integer, not {target!r}")
    search = _Search(g, dev, limits)
    over = search.least_over()
    if over:
        raise _unfit(dev, over, "design's dense/conv2d blocks alone need")
    if target_latency is not None:
        if target_interval is not None:
            raise CosynError("give a target interval or a target latency, not both")
        return search.within_latency(target_latency)
    if target_interval is not None:
        if target_interval < search.floor:
            raise CosynError(
                f"target interval {target_interval} is below {search.floor} cycles, the "
                f"slowest block's at its largest parallelism ({search.slowest}); pass at least "
                f"{search.floor}"
            )
        alloc = search.settle(target_interval)
    else:
        t = search.fitting()
        alloc = search.settle(t)
        # the exact design (its FIFOs, or the parallelism stalls across samples need) may
        # exceed what the blocks' resources promised: a longer interval, until it fits
        while _over(alloc.estimate, limits) and not search.smallest(alloc.parallelism):
            t += max(1, t // 8)
            alloc = search.settle(t)
    if target_interval is not None and alloc.interval > target_interval:
        raise CosynError(
            f"target interval {target_interval} is not reached: the blocks stall each other "
            f"to {alloc.interval} cycles at the largest parallelism that helps; pass at least "
            f"{alloc.interval}"
        )
    over = _over(alloc.estimate, limits)
    if over and target_interval is not None:
        raise CosynError(
            f"target interval {target_interval} needs {over} on {dev.name}; raise the budget "
            "or the target"
        )
    if over:
        raise _unfit(dev, over)
    return alloc


def design_parallelism(
    g: Graph, device: str | Device = "ecp5-85f", parallelism: int | str | dict | None = None
) -> int | dict | None:
    """The parallelism `cosyn.rtl.generate(g, device=device, parallelism=parallelism)`
    builds `g` with, as `perfmodel.pipeline.plan` takes it (None: the default rule,
    `default_parallelism` per node).

    `parallelism`: None or "auto" (the default) is `allocate(g, device)`'s: the smallest
    interval that fits the device, each node balanced to it. Where no parallelism fits
    the device, or `g` is a graph of sequences or has no dense/conv2d node, it is the
    default rule's (whose estimate then reports what is over the device). "rule" is the
    default rule's; a number or a dict is itself."""
    if parallelism == "rule":
        return None
    if parallelism is not None and parallelism != "auto":
        return parallelism
    a = default_allocation(g, device)
    return None if a is None else a.parallelism


def default_allocation(g: Graph, device: str | Device = "ecp5-85f") -> Allocation | None:
    """`allocate(g, device)`, the design `cosyn.rtl.generate` builds by default, with its
    estimate; None where that is the default rule's (`design_parallelism`)."""
    if g.sequence or not any(folded(n) for n in g):
        return None
    try:
        return allocate(g, device)
    except Unfit:
        return None


class Unfit(CosynError):
    """No parallelism fits the budget: even the smallest design is over it."""


def allocate_reuse(g: Graph, multipliers: int) -> dict[str, int]:
    """Each dense/conv node's reuse factor for the smallest interval whose multipliers
    (hls4ml's count, `estimate_hls`) are at most `multipliers`: for an interval T each
    layer takes the largest reuse factor hls4ml accepts whose interval is at most T (the
    fewest multipliers that meet it), and T is the least at which their sum fits. Where
    none fits, every layer takes its largest (one multiplier each, or as few as hls4ml
    accepts). The design's interval is its slowest layer's."""
    nodes = [n for n in g if folded(n)]
    options = {n.name: [hls_layer(n, r) for r in valid_reuse_factors(*mult_size(n))] for n in nodes}

    def choice(t: int) -> dict[str, HLSLayer]:
        return {
            name: next((x for x in reversed(opts) if x.interval <= t), opts[0])
            for name, opts in options.items()
        }

    for t in sorted({x.interval for opts in options.values() for x in opts}):
        c = choice(t)
        if sum(x.multipliers for x in c.values()) <= multipliers:
            return {name: x.reuse_factor for name, x in c.items()}
    return {name: opts[-1].reuse_factor for name, opts in options.items()}


def _unfit(dev: Device, over: str, what: str = "design needs") -> CosynError:
    """The error where even the smallest design (`what` of it) is `over` the budget on
    `dev`."""
    return Unfit(
        f"no parallelism fits the budget on {dev.name}: the smallest {what} {over}; "
        "raise the budget"
    )


def _limits(dev: Device, budget: float | dict[str, float] | None) -> dict[str, float]:
    cap = {r: float(v) for r, v in dev.capacity().items()}
    if budget is None:
        return cap
    if isinstance(budget, dict):
        unknown = sorted(set(budget) - set(RESOURCES))
        if unknown:
            raise CosynError(f"budget: unknown resource {unknown[0]!r}; use {', '.join(RESOURCES)}")
        for r, v in budget.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise CosynError(f"budget: {r} must be a number of at least 0, not {v!r}")
        return {**cap, **{r: float(v) for r, v in budget.items()}}
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 < budget <= 1:
        raise CosynError(f"budget must be a fraction of the device in (0, 1], not {budget!r}")
    return {r: v * budget for r, v in cap.items()}


def _over(e: Estimate | Resources, limits: dict[str, float]) -> str:
    """'' when `e` fits `limits`, else what it needs beyond them, per resource."""
    parts = [
        f"{r.upper()} {getattr(e, r):,.0f} of {limits[r]:,.0f}"
        for r in RESOURCES
        if getattr(e, r) > limits[r]
    ]
    return ", ".join(parts)


class _Search:
    """What the search needs of each dense/conv2d node: its block's interval and resources
    at each parallelism it may take, computed on demand and kept."""

    def __init__(self, g: Graph, dev: Device, limits: dict[str, float]) -> None:
        self.g, self.dev, self.co, self.limits = g, dev, coefficients(dev.family), limits
        self.capacity = {r: float(v) for r, v in dev.capacity().items() if r in RESOURCES}
        base = plan(g)
        self.stages = {s.name: s for s in base.stages if s.node is not None and folded(s.node)}
        rest = [s for s in base.stages if s.name not in self.stages]
        self.fixed = sum((cost(primitives(s), dev, self.co) for s in rest), Resources())
        self.options = {name: _choices(s) for name, s in self.stages.items()}
        # each choice's place among its node's: a later one has more multipliers, or as
        # many and fewer cycles
        self.rank = {n: {p: i for i, p in enumerate(ps)} for n, ps in self.options.items()}
        self._stage = cache(self._stage_uncached)
        self._block = cache(self._block_uncached)
        self._finish = cache(self._finish_uncached)
        self._estimates: dict[tuple, Estimate] = {}
        slow = [(s.timing.interval, s.name) for s in rest]
        slow += [(self._block(n, ps[-1])[0], n) for n, ps in self.options.items()]
        self.floor, self.slowest = max(slow)

    def _stage_uncached(self, name: str, p: int | tuple[int, int]) -> Stage:
        """Node `name`'s block at parallelism p (P or (P, S)), with its timing."""
        s = self.stages[name]
        q, k = parallelism_pair(p)
        ctx = dataclasses.replace(s.ctx, parallelism=q, simd=k)
        return Stage(s.name, s.kind, TIMINGS[s.kind](s.node, ctx), s.inputs, s.node, ctx, q)

    def _block_uncached(self, name: str, p: int | tuple[int, int]) -> tuple[int, Resources]:
        """(interval, resources) of node `name`'s block at parallelism p."""
        stage = self._stage(name, p)
        return int(stage.timing.interval), cost(primitives(stage), self.dev, self.co)

    def _slower(self, name: str, p, q) -> bool:
        """Node `name`'s block at parallelism p is no faster than at q: neither its
        interval nor its first input to last output is shorter."""
        slower = self._block(name, p)[0] >= self._block(name, q)[0]
        return slower and self._finish(name, p) >= self._finish(name, q)

    def _finish_uncached(self, name: str, p: int | tuple[int, int]) -> int:
        """Cycles from node `name`'s block's first input to its last output, a sample
        at full rate, at parallelism p."""
        stage = self._stage(name, p)
        return int(stage.timing.timing(*[np.arange(x.elements) for x in stage.inputs])[-1])

    def _performed(self, name: str, p: int | tuple[int, int]) -> int:
        """Multiply-accumulates per sample node `name`'s block performs at parallelism p:
        all, or where it skips zero weights (its timing's `kept`), the terms each group
        issues on its lanes."""
        stage = self._stage(name, p)
        node, kept, q = stage.node, stage.timing.kept, stage.parallelism
        if kept is None:
            return int(node.macs)
        outputs = int(node.shape[0])  # the last group's lanes beyond them hold no weights
        repeats = int(node.macs) // int(node.weight.size)  # a conv's output pixels
        return repeats * sum(len(k) * min(q, outputs - g * q) for g, k in enumerate(kept))

    def choice(self, t: int) -> dict[str, int]:
        """Each node's smallest parallelism whose block takes at most t cycles per sample
        (its largest where none does). A block of P multipliers takes at least `_work` / P
        cycles, so smaller P are not stepped."""
        out = {}
        for name, ps in self.options.items():
            least = _work(self.stages[name].node) / t
            out[name] = next(
                (p for p in ps if multipliers(p) >= least and self._block(name, p)[0] <= t), ps[-1]
            )
        return out

    def resources(self, choice: dict[str, int]) -> Resources:
        return sum((self._block(n, p)[1] for n, p in choice.items()), self.fixed)

    def fitting(self) -> int:
        """The smallest T whose `choice(T)` fits the limits by its blocks' resources
        (doubling, then bisection: those resources only shrink as T grows); where none
        does, a T at which every node has parallelism 1."""
        lo = hi = self.floor
        while _over(self.resources(c := self.choice(hi)), self.limits):
            if self.smallest(c):
                return hi
            lo, hi = hi, 2 * hi
        while hi - lo > 1:  # choice(lo) is over, choice(hi) fits
            mid = (lo + hi) // 2
            if _over(self.resources(self.choice(mid)), self.limits):
                lo = mid
            else:
                hi = mid
        return hi

    def within_latency(self, latency: int) -> Allocation:
        """The allocation of the fewest resources (`weight`) whose completion (a sample's
        first input to its last output) is at most `latency`; the refusal's figure where
        even the fastest design within the limits misses it (the least completion is not
        always at the least interval: the best of that design, every node at its
        largest parallelism, and every node at the one whose own last output is
        soonest). From every node at its smallest parallelism, the next parallelism up
        of the node that buys the most cycles per resource is taken until the target is
        met, each trial estimated exactly (the last step: the cheapest that meets it);
        where no single step shortens the design, the fastest design instead.
        Then each node, the costliest first, is lowered to the smallest that keeps the
        target, and the cheaper choices are searched best-first (`_cheapest`)."""
        fast = self.settle(self.fitting())
        for other in (
            {n: ps[-1] for n, ps in self.options.items()},
            {n: min(ps, key=lambda p, n=n: self._finish(n, p)) for n, ps in self.options.items()},
        ):
            alt = self._allocation(other, self._estimate(other))
            if not _over(alt.estimate, self.limits) and (
                _over(fast.estimate, self.limits)
                or alt.estimate.completion < fast.estimate.completion
            ):
                fast = alt
        over = _over(fast.estimate, self.limits)
        if over:
            raise _unfit(self.dev, over)
        if fast.estimate.completion > latency:
            raise CosynError(
                f"target latency {latency} is below {fast.estimate.completion} cycles, the "
                f"least cosyn's allocation reaches on {self.dev.name} (interval "
                f"{fast.interval}); pass at least {fast.estimate.completion}"
            )
        c = {n: ps[0] for n, ps in self.options.items()}
        e = self._estimate(c)
        while e.completion > latency:
            steps = []  # (0, resources) where a step meets the target, else (1, -cycles/resource)
            for n, ps in self.options.items():
                i = ps.index(c[n])
                if i + 1 == len(ps):
                    continue
                trial = {**c, n: ps[i + 1]}
                et = self._estimate(trial)
                price = max(self._cost(n, ps[i + 1]) - self._cost(n, c[n]), 1e-12)
                if et.completion <= latency:  # the cheapest step that meets it ends the search
                    steps.append((0, price, trial, et))
                elif et.completion < e.completion:
                    steps.append((1, (et.completion - e.completion) / price, trial, et))
            if not steps:  # no one step shortens it: the fastest design, lowered
                c, e = dict(fast.parallelism), fast.estimate
                break
            _, _, c, e = min(steps, key=lambda s: s[:2])
        for n in sorted(c, key=lambda n: -self._cost(n, c[n])):
            for p in self.options[n][: self.rank[n][c[n]]]:
                trial = {**c, n: p}
                et = self._estimate(trial)
                if et.completion <= latency:
                    c, e = trial, et
                    break
        c, e = self._cheapest(latency, c, e)
        if _over(e, self.limits) or self.weight(e) > self.weight(fast.estimate):
            return fast
        return self._allocation(c, e)

    def _cheapest(self, latency: int, c: dict[str, int], e: Estimate, tries: int = 4096):
        """The choice of the fewest blocks' resources whose completion is at most `latency`,
        among those cheaper than `c` (which meets it, estimated `e`): best-first over each
        node's parallelisms in order of their resources, so the first that meets it is the
        cheapest. A node's parallelism whose block alone, a sample at full rate, takes
        longer than `latency` from its first input to its last output (`_finish`) is not
        tried: the design's completion is at least that. A choice whose every block is
        no faster than one that missed (`_slower`) is taken to miss too and not
        estimated; after `tries` estimates, `c`."""
        names = list(self.options)
        opts = [
            sorted((p for p in self.options[n] if self._finish(n, p) <= latency),
                   key=lambda p, n=n: self._cost(n, p))
            for n in names
        ]  # fmt: skip
        w = [[self._cost(n, p) for p in o] for n, o in zip(names, opts, strict=True)]
        bound = sum(self._cost(n, c[n]) for n in names)
        first = (0,) * len(names)
        heap, seen, missed = [(sum(ws[0] for ws in w), first)], {first}, []
        while heap and tries:
            weight, idx = heapq.heappop(heap)
            if weight >= bound:
                break
            trial = {n: opts[k][i] for k, (n, i) in enumerate(zip(names, idx, strict=True))}
            if not any(all(self._slower(n, trial[n], m[n]) for n in names) for m in missed):
                tries -= 1
                et = self._estimate(trial)
                if et.completion <= latency and not _over(et, self.limits):
                    return trial, et
                if et.completion > latency:
                    missed.append(trial)
            for k, i in enumerate(idx):
                nxt = (*idx[:k], i + 1, *idx[k + 1 :])
                if i + 1 < len(opts[k]) and nxt not in seen:
                    seen.add(nxt)
                    heapq.heappush(heap, (weight - w[k][i] + w[k][i + 1], nxt))
        return c, e

    def weight(self, r: Resources | Estimate) -> float:
        """One figure for resources: the sum of the device's fractions they take."""
        return sum(getattr(r, k) / v for k, v in self.capacity.items() if v)

    def _cost(self, name: str, p: int) -> float:
        """The `weight` of node `name`'s block at parallelism p."""
        return self.weight(self._block(name, p)[1])

    def least_over(self) -> str:
        """What the dense/conv2d blocks alone, each at its smallest parallelism, need
        beyond the limits ('' where they fit): then no design fits, its other blocks and
        FIFOs only add to them."""
        blocks = (self._block(n, ps[0])[1] for n, ps in self.options.items())
        return _over(sum(blocks, Resources()), self.limits)

    def smallest(self, choice: dict[str, int]) -> bool:
        """Every node at its smallest parallelism."""
        return all(p == self.options[n][0] for n, p in choice.items())

    def settle(self, t: int) -> Allocation:
        """The allocation for interval t, planned and estimated: `choice(t)` where its
        interval is at most t. Where it is more (a block stalls its producer across
        samples, see `perfmodel.steady`), every node starts from its largest parallelism
        and, the costliest first, is lowered to the smallest that keeps the interval at
        most t, or at most the interval at the largest where that is more (bisection:
        fewer multipliers never shorten the interval)."""
        c = self.choice(t)
        e = self._estimate(c)
        if e.interval <= t:
            return self._allocation(c, e)
        c = {n: ps[-1] for n, ps in self.options.items()}
        e = self._estimate(c)
        goal = max(t, e.interval)
        least = self.choice(goal)
        for n in sorted(c, key=lambda n: -self._block(n, c[n])[1].lut):
            ps = self.options[n][self.rank[n][least[n]] : self.rank[n][c[n]]]
            lo, hi = 0, len(ps)  # ps[hi:] keep the interval (ps[len(ps)]: c[n] itself)
            while lo < hi:
                mid = (lo + hi) // 2
                trial = {**c, n: ps[mid]}
                et = self._estimate(trial)
                if et.interval <= goal:
                    hi, kept = mid, (trial, et)
                else:
                    lo = mid + 1
            if hi < len(ps):
                c, e = kept
        return self._allocation(c, e)

    def _estimate(self, choice: dict[str, int]) -> Estimate:
        """The design's estimate with `choice`, each choice planned once (`settle` asks
        again for the largest parallelism, and the budget's search for earlier trials)."""
        key = tuple(sorted(choice.items()))
        if key not in self._estimates:
            self._estimates[key] = estimate_plan(plan(self.g, choice), self.dev)
        return self._estimates[key]

    def _allocation(self, choice: dict[str, int], e: Estimate) -> Allocation:
        macs = {n: self._performed(n, p) for n, p in choice.items()}
        return Allocation(dict(choice), macs, e, self.limits)


def _work(node) -> int:
    """Multiply-accumulates per sample a block of any parallelism performs at least: every
    non-zero weight, once per output pixel (a block that skips terms never skips one)."""
    return int(np.count_nonzero(node.weight)) * (int(node.macs) // int(node.weight.size))


def _choices(s: Stage) -> list[int | tuple[int, int]]:
    """The parallelisms node `s.node` may take, from the fewest multipliers: each P that
    `resolve_parallelism` keeps as it is, up to the first it refuses, less those that
    need as many groups of lanes as one lane fewer (more multipliers, the same cycles);
    for a kind in `SIMD`, also each (P, S) (S dividing `lane_inputs`) that needs fewer
    cycles than every choice of no more multipliers, all terms issued: a group of P
    lanes takes max(terms / S, P) cycles (its results leave one a cycle), and there are
    ceil(outputs / P) groups a sample (dense) or an output pixel (conv2d). (A P alone may
    skip zero weights and take fewer, so each is kept.) Of as many multipliers, the
    slower comes first."""
    node = s.node
    outs, ps = int(node.shape[0]), []
    for p in range(1, outs + 1):
        try:
            q, _, _ = resolve_parallelism(node, p, p)
        except CosynError:
            break
        if q == p and p == -(-outs // -(-outs // p)):
            ps.append(p)
    if node.kind not in SIMD:
        return ps
    n, terms = node.lane_inputs, int(node.weight[0].size)  # an output's terms
    options = sorted(
        (p * k, -(-outs // p) * max(terms // k, p), k, p)
        for k in range(1, n + 1)
        if n % k == 0
        for p in ps
    )
    kept, best = [], None
    for mults, cycles, k, p in options:
        if k == 1 or best is None or cycles < best:
            kept.append((mults, -cycles, p if k == 1 else (p, k)))
        best = cycles if best is None else min(best, cycles)
    return [v for _, _, v in sorted(kept, key=lambda x: x[:2])]
