"""The length-aware sequence scheduler: in what order variable-length sequences enter a
transformer's layer pipeline, without padding (issue 12, item 5).

The pipeline is coarse-grained, as in DAC'22's dynamic pipelining: its stages
(`sequence_stages`) each hold one sequence at a time, with a buffer of one longest
sequence's tokens between consecutive stages (which holds several short ones), so stage
s works on sequence i while stage s + 1 works on sequence i - 1. A graph of sequences
(`Graph.sequence`) has two kinds of stage:
  - an attention block (`perfmodel.attention.AttentionTiming.interval`, held to the RTL
    register for register): it stores the whole sequence, then computes row by row;
  - a chain of per-token blocks between two attention blocks (the embedding, the Q, K, V
    and output projections, requantizers, residual adds, LayerNorms, the feed-forward
    layers, the CLS token's read and the head): fill + (n - 1) * II cycles for n tokens,
    the fill being the latencies along its longest path and II its slowest block's
    cycles per token (`perfmodel.pipeline.TIMINGS`; the embedding and the CLS read an
    element a cycle, as their blocks in `hw/rtl/_embed.py`).
A sequence of L tokens is L + 1 in the pipeline (the CLS token in front).

This is a model of the RTL (`perfmodel.sequence`), not the RTL: there, an attention
block's rows stream through the chain behind it into the next attention block, which
receives them as they come, and the chain's blocks hold a few tokens each. Against the
RTL's cycles (`schedule_sequences(exact=True)`, every control stepped), on the first 40
stdlib lengths through a 2-block design of 32 tokens at most (dim 8), the model is 3%
to 7% long, padded or not, window or dense (`benchmarks/attention.py`). It is fast
(seconds for the whole stdlib stream); the exact cycles take tens of microseconds a
cycle.

Stage s of sequence i starts when stage s - 1 has passed it on and stage s has passed on
sequence i - 1; it passes sequence i on when done and the buffer behind it is free
(stage s + 1 has taken sequence i - 1). The stream waits in full (a backlog), and three
policies order it:
  - "padded": batches of `batch` sequences in arrival order, each sequence padded to its
    batch's longest (what a fixed-shape accelerator and Long Range Arena's pipeline do);
  - "fcfs": arrival order, each sequence at its own length;
  - "length-aware": each next sequence is the one, of the `window` oldest waiting, that
    leaves the stages least time idle or blocked (ties: the oldest); one passed over
    `window` times is taken next, so none waits for ever.
`schedule_sequences` runs one policy; `compare` the three on the same stream.

Throughput is sequences per cycle over the whole stream; latency a sequence's cycles
from entering the first stage to leaving the last; utilization the busiest stage's
useful cycles (at the sequences' own lengths) over the stream's cycles.
"""

from __future__ import annotations

import json
import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from cosyn.perfmodel.attention import AttentionTiming
from cosyn.perfmodel.sequence import SequencePlan, sequence_cycles

from cosyn.errors import CosynError
from cosyn.ir.graph import Graph

__all__ = [
    "POLICIES",
    "Schedule",
    "SequenceStage",
    "compare",
    "plot_timeline",
    "schedule_sequences",
    "schedule_table",
    "sequence_stages",
    "stdlib_lengths",
]

POLICIES = ("padded", "fcfs", "length-aware")
STDLIB = Path(__file__).with_name("stdlib_lengths.json")  # benchmarks/stdlib_lengths.py


def stdlib_lengths(seed: int = 0) -> np.ndarray:
    """The token counts of the Python standard library's docstrings (the histogram
    benchmarks/stdlib_lengths.py wrote), each docstring once, in an order shuffled by
    `seed`: a real stream of lengths with no download."""
    counts = json.loads(STDLIB.read_text())["histogram"]
    lengths = np.repeat([int(n) for n in counts], list(counts.values())).astype(np.int64)
    np.random.default_rng(seed).shuffle(lengths)
    return lengths


@dataclass(frozen=True)
class SequenceStage:
    """A stage of the coarse-grained pipeline: `cycles(n)` for a sequence of n tokens (the
    CLS token included); `nodes` the graph's nodes it runs."""

    name: str
    kind: str  # "attention" or "tokens"
    nodes: tuple[str, ...]
    fill: int = 0  # tokens: latencies along the longest path
    per_token: int = 0  # tokens: the slowest block's cycles per token
    attention: AttentionTiming | None = field(default=None, compare=False)

    def cycles(self, n: int) -> int:
        if self.attention is not None:
            return self.attention.interval(n)
        return self.fill + (n - 1) * self.per_token


def sequence_stages(g: Graph, parallelism: int | dict | None = None) -> list[SequenceStage]:
    """The stages of the graph of sequences `g` (see the module doc), in pipeline order;
    the blocks and their timing are the RTL's plan's (`perfmodel.sequence.SequencePlan`)."""
    if not g.sequence:
        raise CosynError(
            f"{g.output.name}: the graph takes one sample at a time, not sequences; the "
            "sequence scheduler is for a transformer (cosyn.models.zoo:transformer)"
        )
    stages: list[SequenceStage] = []
    chain: list[tuple[str, int]] = []  # (name, cycles a token; 0 on the CLS token alone)
    done: dict[str, int] = {}  # a value's ready time in the current chain, by node

    def close() -> None:
        if chain:
            names = tuple(n for n, _ in chain)
            stages.append(SequenceStage(
                f"{names[0]} .. {names[-1]}", "tokens", names, fill=max(done.values()),
                per_token=max(t for _, t in chain)))  # fmt: skip
            chain.clear()
        done.clear()

    after_token = False  # past the CLS read or a CLS-only attention: one token a sequence
    for st in SequencePlan(g, parallelism).stages:
        node = st.node
        if node is None:  # forks and FIFOs: a cycle each, left out
            continue
        if st.kind == "attention":
            close()
            stages.append(SequenceStage(node.name, "attention", (node.name,),
                                        attention=st.timing))  # fmt: skip
            done[node.name] = 0
            after_token = after_token or node.queries == 1  # its rows: the CLS token's
            continue
        width = math.prod(node.shape)
        latency, per_token = (1, width) if st.kind in ("embed", "token") else (
            int(st.timing.latency), int(st.timing.interval))  # fmt: skip
        done[node.name] = max((done.get(i, 0) for i in node.inputs), default=0) + latency
        chain.append((node.name, per_token if st.kind == "token" or not after_token else 0))
        after_token = after_token or st.kind == "token"
    close()
    return stages


@dataclass
class Schedule:
    """One policy's run of a stream: `order` (indices into the accepted `lengths`, in the
    order they entered), per stage and sequence (in that order) the cycle it `start`s,
    is `done` and `leave`s, and the sequences `rejected` (index in the stream, length,
    why) that no stage could take. The j-th entered sequence ran at `tokens[j]` tokens
    (the CLS included; padded or its own) through buffers of `capacity` tokens;
    `cycles[s, j]` is stage s's work on it, `useful[s, j]` that at its own length.
    `exact` (when asked): per entered sequence, the cycles its count is taken, its first
    and its last output leave in the RTL (`perfmodel.sequence.sequence_cycles`)."""

    policy: str
    stages: list[SequenceStage]
    lengths: np.ndarray  # the accepted sequences' tokens, in arrival order
    order: np.ndarray
    tokens: np.ndarray
    capacity: int
    start: np.ndarray
    done: np.ndarray
    leave: np.ndarray
    cycles: np.ndarray
    useful: np.ndarray
    rejected: list[tuple[int, int, str]] = field(default_factory=list)
    exact: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @property
    def exact_cycles(self) -> int | None:
        """With `exact`: the stream's cycles in the RTL, its first input to its last output."""
        if self.exact is None or not len(self.order):
            return None
        first, _, last = self.exact
        return int(last[-1] - first[0] + 1)

    @property
    def total_cycles(self) -> int:
        return int(self.leave[-1, -1]) if self.leave.size else 0

    @property
    def throughput(self) -> float:
        """Sequences per cycle."""
        return len(self.order) / self.total_cycles if self.total_cycles else 0.0

    @property
    def latencies(self) -> np.ndarray:
        """Cycles from entering the first stage to leaving the last, per sequence."""
        return self.leave[-1] - self.start[0]

    @property
    def utilization(self) -> float:
        """The busiest stage's useful cycles over the stream's."""
        if not self.total_cycles:
            return 0.0
        return float(self.useful.sum(axis=1).max()) / self.total_cycles

    def record(self, freq_mhz: float | None = None) -> dict[str, Any]:
        lat = self.latencies
        r = {
            "policy": self.policy,
            "sequences": len(self.order),
            "rejected": len(self.rejected),
            "cycles": self.total_cycles,
            "sequences_per_kcycle": 1e3 * self.throughput,
            "latency_mean": float(lat.mean()) if lat.size else 0.0,
            "latency_p99": float(np.percentile(lat, 99)) if lat.size else 0.0,
            "utilization": self.utilization,
        }
        if freq_mhz is not None:
            r["sequences_per_s"] = self.throughput * freq_mhz * 1e6
        return r


def schedule_sequences(
    lengths: Any,
    design: Any,
    policy: str = "length-aware",
    batch: int = 8,
    window: int = 32,
    parallelism: int | dict | None = None,
    exact: bool = False,
) -> Schedule:
    """Order the stream of sequences of `lengths` tokens (CLS not counted) through the
    pipeline of `design` (a graph of sequences, its stages, or the design `cosyn.rtl.
    generate` wrote for one, at the parallelism it records) by `policy` (see the module
    doc). A sequence no stage can take (empty, or longer than the design's
    maximum) is rejected with its reason; the others are scheduled. With `exact` (a
    graph), the order's cycles in the RTL too, every block's control stepped (slow: for
    short streams)."""
    if policy not in POLICIES:
        raise CosynError(f"policy {policy!r}: choose one of {', '.join(POLICIES)}")
    if batch < 1 or window < 1:
        raise CosynError(f"batch {batch}, window {window}: give positive counts")
    g, stages, parallelism = _design(design, parallelism)
    most = _max_tokens(stages)
    raw = np.asarray(lengths, dtype=np.int64).reshape(-1)
    rejected = [(int(i), int(n), _why(int(n), most)) for i, n in enumerate(raw)
                if not 1 <= n <= most]  # fmt: skip
    ok = np.asarray([n for n in raw if 1 <= n <= most], dtype=np.int64)
    cost = _cost_table(stages, ok)
    useful = np.stack([c[ok] for c in cost]) if ok.size else _empty(stages)
    ran = ok.copy()  # the tokens each sequence runs at (the CLS not counted)
    if policy == "padded":
        for b in range(0, len(ok), batch):
            ran[b : b + batch] = ok[b : b + batch].max()
    work = np.stack([c[ran] for c in cost]) if ok.size else useful
    capacity = most + 1  # a buffer holds a longest sequence, the CLS included
    order, start, done, leave = _run(ran + 1, work, capacity,
                                     window if policy == "length-aware" else None)  # fmt: skip
    s = Schedule(policy, list(stages), ok, order, ran[order] + 1, capacity, start, done, leave,
                 work[:, order], useful[:, order], rejected)  # fmt: skip
    if exact:
        if g is None:
            raise CosynError("exact cycles need the design's graph, not its stages")
        s.exact = sequence_cycles(SequencePlan(g, parallelism), [int(n) for n in ran[order]])
    return s


def compare(
    lengths: Any, design: Any, batch: int = 8, window: int = 32,
    parallelism: int | dict | None = None,
) -> dict[str, Schedule]:  # fmt: skip
    """The three policies on the same stream, by name."""
    _, stages, _ = _design(design, parallelism)
    return {p: schedule_sequences(lengths, stages, p, batch, window) for p in POLICIES}


def _design(
    design: Any, parallelism: int | dict | None
) -> tuple[Graph | None, list[SequenceStage], int | dict | None]:
    """`design` as its graph (None where only its stages are given), its stages and its
    parallelism: a generated RTL design (`cosyn.rtl.generate`'s Design) at the one its
    manifest records, a graph at `parallelism`."""
    if isinstance(design, list):
        return None, design, parallelism
    if isinstance(design, Graph):
        return design, sequence_stages(design, parallelism), parallelism
    manifest, g = getattr(design, "manifest", None), getattr(design, "graph", None)
    if not isinstance(g, Graph) or not isinstance(manifest, dict):
        raise CosynError(
            f"{design!r}: give a graph of sequences, its stages, or the design "
            "cosyn.rtl.generate wrote for one"
        )
    if not manifest.get("sequence"):
        raise CosynError(f"{design.path}: not a sequence design; generate one of a transformer")
    recorded = {n["name"]: n["parallelism"] for n in manifest["nodes"] if n.get("parallelism")}
    return g, sequence_stages(g, recorded), recorded


def _max_tokens(stages: list[SequenceStage]) -> int:
    """The most tokens a sequence may have: the attention blocks' maximum, less the CLS."""
    caps = [s.attention.node.max_len for s in stages if s.attention is not None]
    return min(caps) - 1 if caps else 1 << 30


def _why(n: int, most: int) -> str:
    if n < 1:
        return "an empty sequence; give at least one token"
    return f"{n} tokens, more than the design's {most} (its attention's max_len less the CLS)"


def _empty(stages: list[SequenceStage]) -> np.ndarray:
    return np.zeros((len(stages), 0), dtype=np.int64)


def _cost_table(stages: list[SequenceStage], lengths: np.ndarray) -> list[np.ndarray]:
    """Per stage, cycles indexed by token count (the CLS added), for the counts in `lengths`."""
    top = int(lengths.max()) if lengths.size else 0
    table = []
    for s in stages:
        row = np.zeros(top + 1, dtype=np.int64)
        for n in np.unique(lengths):
            row[n] = s.cycles(int(n) + 1)
        table.append(row)
    return table


class _State:
    """The pipeline after the sequences entered so far: when each stage passed its last
    sequence on (`free`), and per buffer the sequences in it or yet to come: (tokens, when
    the stage after it takes them), oldest first."""

    def __init__(self, n_stages: int, capacity: int) -> None:
        self.free = np.zeros(n_stages, dtype=np.int64)
        self.buffers: list[deque[tuple[int, int]]] = [deque() for _ in range(n_stages - 1)]
        self.capacity = capacity

    def times(self, tokens: int, work: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """start, done, leave per stage of a sequence of `tokens` and `work` cycles
        entering next."""
        n = len(work)
        start, done, leave = (np.zeros(n, dtype=np.int64) for _ in range(3))
        passed = 0  # when the stage before passed the sequence on (the stream waits in full)
        for s in range(n):
            start[s] = max(passed, self.free[s])
            done[s] = start[s] + work[s]
            leave[s] = done[s] if s == n - 1 else self._room(s, tokens, done[s])
            passed = leave[s]
        return start, done, leave

    def _room(self, s: int, tokens: int, t: int) -> int:
        """The first cycle from t at which the buffer behind stage s has room for `tokens`:
        the newest sequences in it that fit stay, the one before them must be taken."""
        held = tokens
        for n, taken in reversed(self.buffers[s]):
            if taken <= t:
                break
            held += n
            if held > self.capacity:
                return taken
        return t

    def enter(self, tokens: int, work: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        start, done, leave = self.times(tokens, work)
        self.free = leave.copy()
        for s, buf in enumerate(self.buffers):
            while buf and buf[0][1] <= done[s]:  # taken before this stage's next can finish
                buf.popleft()
            buf.append((tokens, int(start[s + 1])))
        return start, done, leave

    def waste(self, tokens: int, work: np.ndarray) -> int:
        """Cycles the stages would stand idle or blocked if a sequence of `tokens` and
        `work` entered next."""
        start, done, leave = self.times(tokens, work)
        return int((start - self.free).sum() + (leave - done).sum())


def _run(
    tokens: np.ndarray, work: np.ndarray, capacity: int, window: int | None
) -> tuple[np.ndarray, ...]:
    """The order (arrival order where `window` is None, else length-aware: see the module
    doc) of sequences of `tokens` (the CLS included) and `work` cycles per stage (rows),
    through buffers of `capacity` tokens; and per stage and entered sequence the cycle
    it starts, is done and leaves."""
    n_st, n = work.shape
    state = _State(n_st, capacity)
    waiting = list(range(n))
    passed = np.zeros(n, dtype=np.int64)
    order, start, done, leave = [], *(np.zeros((n_st, n), dtype=np.int64) for _ in range(3))
    for j in range(n):
        pool = waiting[: window or 1]
        if len(pool) == 1 or passed[pool[0]] >= len(pool):
            pick = pool[0]
        else:
            pick = min(pool, key=lambda i: (state.waste(tokens[i], work[:, i]), i))
        for i in pool:
            passed[i] += i != pick
        waiting.remove(pick)
        order.append(pick)
        start[:, j], done[:, j], leave[:, j] = state.enter(tokens[pick], work[:, pick])
    return np.asarray(order, dtype=np.int64), start, done, leave


def plot_timeline(schedules: dict[str, Schedule], path: str | Path, first: int = 40) -> Path:
    """The stages' occupancy over time for the first `first` sequences each policy let in,
    one panel a policy on a shared time axis: a bar per stage and sequence from its start
    to its done (a sequence's colour by its tokens), a thin line while it waits to be
    passed on (a PNG, written whole)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cosyn.report import save_png

    runs = list(schedules.items())
    fig, axes = plt.subplots(len(runs), 1, figsize=(10, 1.0 + 1.3 * len(runs) * 1.6),
                             sharex=True, squeeze=False)  # fmt: skip
    most = max((int(s.tokens[:first].max()) for _, s in runs if s.tokens.size), default=1)
    cmap = plt.get_cmap("viridis")
    for ax, (name, s) in zip(axes[:, 0], runs, strict=True):
        n = min(first, len(s.order))
        for k in range(len(s.stages)):
            for j in range(n):
                colour = cmap(s.tokens[j] / most)
                ax.barh(k, s.done[k, j] - s.start[k, j], left=s.start[k, j], height=0.8,
                        color=colour, edgecolor="white", linewidth=0.3)  # fmt: skip
                if s.leave[k, j] > s.done[k, j]:
                    ax.plot([s.done[k, j], s.leave[k, j]], [k, k], color=colour, lw=1)
        ax.set_yticks(range(len(s.stages)), [st.name for st in s.stages], fontsize=6)
        ax.invert_yaxis()
        ax.set_title(f"{name}: first {n} sequences", fontsize=9)
    axes[-1, 0].set_xlabel("cycle")
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(1, most))
    fig.colorbar(sm, ax=axes[:, 0], label="tokens (CLS included)")
    return save_png(fig, path)


def schedule_table(schedules: dict[str, Schedule], freq_mhz: float = 100.0) -> Any:
    """The policies side by side (a rich Table): throughput (and against padded
    batching's), latency at `freq_mhz`, the busiest stage's utilization."""
    from rich.table import Table

    base = schedules.get("padded")
    t = Table(title=f"sequence scheduling at {freq_mhz:g} MHz (latency: mean, p99)")
    for col in ("policy", "seqs", "bad", "seq/s", "x padded",
                "mean us", "p99 us", "util"):  # fmt: skip
        t.add_column(col, justify="left" if col == "policy" else "right")
    for name, s in schedules.items():
        r = s.record(freq_mhz)
        gain = f"{s.throughput / base.throughput:.2f}x" if base and base.throughput else "-"
        t.add_row(
            name, str(r["sequences"]), str(r["rejected"]),
            f"{r['sequences_per_s']:,.1f}", gain, f"{r['latency_mean'] / freq_mhz:,.0f}",
            f"{r['latency_p99'] / freq_mhz:,.0f}", f"{100 * r['utilization']:.1f}%",
        )  # fmt: skip
    return t
