"""The pipeline's steady state: every block's control stepped together, cycle by cycle.

Sample 0's timing composes from each block's `timing` (the pipeline puts FIFOs where
a block would stall its producer within a sample). Consecutive samples interact: a
convolution whose line buffer is full stops taking its input while it still reads
rows, its producer's output register fills and that producer stops too, so the next
sample reaches the slow block later than at full rate. `steady_interval` models
that: it steps a cycle model of each block's control (the same registers and
conditions as its RTL, without the data) together, with valid and ready between
them, the input always offered and the output always ready, for several samples,
and returns the steady-state difference between consecutive samples' first outputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["steady_interval"]

MIN_SAMPLES = 4
MAX_SAMPLES = 12


class _Elementwise:
    """`Elementwise`: `stages` registers that advance together unless the last holds
    a result its consumer does not take."""

    def __init__(self, stages: int) -> None:
        self.v = [False] * stages

    def valid(self) -> list[bool]:
        return [self.v[-1]]

    def ready(self, valids: list[bool], oready: list[bool]) -> list[bool]:
        return [not (self.v[-1] and not oready[0])]

    def step(self, takes: list[bool], oready: list[bool]) -> None:
        if not (self.v[-1] and not oready[0]):
            self.v = [takes[0], *self.v[:-1]]


class _Add:
    """`AddBlock`: one output register; a pair is taken when both inputs are valid and
    the register is empty or leaving."""

    def __init__(self) -> None:
        self.v = False

    def valid(self) -> list[bool]:
        return [self.v]

    def ready(self, valids: list[bool], oready: list[bool]) -> list[bool]:
        space = not self.v or oready[0]
        return [valids[1] and space, valids[0] and space]

    def step(self, takes: list[bool], oready: list[bool]) -> None:
        if takes[0]:
            self.v = True
        elif oready[0]:
            self.v = False


class _Fork:
    """`Fork`: one register per output; an element is taken when both are free."""

    def __init__(self) -> None:
        self.v = [False, False]

    def valid(self) -> list[bool]:
        return list(self.v)

    def ready(self, valids: list[bool], oready: list[bool]) -> list[bool]:
        return [all(not v or r for v, r in zip(self.v, oready, strict=True))]

    def step(self, takes: list[bool], oready: list[bool]) -> None:
        for j in range(2):
            if takes[0]:
                self.v[j] = True
            elif oready[j]:
                self.v[j] = False


class _Fifo:
    """`SkipFifo` (Amaranth's SyncFIFO): written in one cycle, readable in the next."""

    def __init__(self, depth: int) -> None:
        self.depth, self.level = depth, 0

    def valid(self) -> list[bool]:
        return [self.level != 0]

    def ready(self, valids: list[bool], oready: list[bool]) -> list[bool]:
        return [self.level != self.depth]

    def step(self, takes: list[bool], oready: list[bool]) -> None:
        self.level += int(takes[0]) - int(self.level != 0 and oready[0])


class _Dense:
    """`DenseBlock`'s control: two input buffers, a read stage, the output register."""

    def __init__(self, block: Any) -> None:
        self.n, self.p, self.groups = block.n, block.p, block.groups
        self.full = [False, False]
        self.wr_bank = self.wr_i = self.rd_bank = self.g = self.i = self.left = 0
        self.s1_valid = self.s1_last = False

    def valid(self) -> list[bool]:
        return [self.left != 0]

    def ready(self, valids: list[bool], oready: list[bool]) -> list[bool]:
        return [not self.full[self.wr_bank]]

    def step(self, takes: list[bool], oready: list[bool]) -> None:
        free = self.left == 0 or (self.left == 1 and oready[0])
        stall = self.s1_valid and self.s1_last and not free
        issue = self.full[self.rd_bank] and not stall
        load = self.s1_valid and not stall and self.s1_last
        if self.left and oready[0]:
            self.left -= 1
        if load:
            self.left = self.p
        if not stall:
            self.s1_valid, self.s1_last = issue, self.i == self.n - 1
        if takes[0]:
            self.wr_i += 1
            if self.wr_i == self.n:
                self.wr_i = 0
                self.full[self.wr_bank] = True
                self.wr_bank ^= 1
        if issue:
            self.i += 1
            if self.i == self.n:
                self.i = 0
                self.g += 1
                if self.g == self.groups:
                    self.g = 0
                    self.full[self.rd_bank] = False
                    self.rd_bank ^= 1


class _Conv:
    """`Conv2dBlock`'s control: its `ConvSchedule` state, one cycle at a time."""

    def __init__(self, block: Any, samples: int) -> None:
        from cosyn.hw.rtl._conv2d_timing import _State

        geo = block.geo
        self.st = _State(geo, np.zeros(samples * geo.frame_in, dtype=np.int64))

    def valid(self) -> list[bool]:
        return [self.st.left != 0]

    def ready(self, valids: list[bool], oready: list[bool]) -> list[bool]:
        return [self.st._ready()]

    def step(self, takes: list[bool], oready: list[bool]) -> None:
        # take = offered & ready: the offer is the take here (ready was just computed)
        self.st.step(takes[0], oready[0])


def _model(stage: Any, samples: int) -> Any:
    from cosyn.hw.rtl._add import AddBlock, Fork, SkipFifo
    from cosyn.hw.rtl._conv2d import Conv2dBlock
    from cosyn.hw.rtl._dense import DenseBlock
    from cosyn.hw.rtl._elementwise import Elementwise

    b = stage.block
    if isinstance(b, Conv2dBlock):
        return _Conv(b, samples)
    if isinstance(b, DenseBlock):
        return _Dense(b)
    if isinstance(b, Elementwise):
        return _Elementwise(len(b.stages))
    if isinstance(b, AddBlock):
        return _Add()
    if isinstance(b, Fork):
        return _Fork()
    if isinstance(b, SkipFifo):
        return _Fifo(b.depth)
    raise TypeError(f"{stage.node.name}: no cycle model for {type(b).__name__}")


def _outputs(block: Any) -> list[Any]:
    from cosyn.hw.rtl._add import Fork

    return [block.o0, block.o1] if isinstance(block, Fork) else [block.o]


def first_outputs(p: Any, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """(cycle of each sample's first input transfer, cycle of its first output transfer)
    when `samples` samples stream through the plan `p`, the input always offered and
    the output always ready."""
    n_in, n_out = p.source.elements, p.sink.elements
    stages = p.stages
    models = [_model(s, samples) for s in stages]
    # where each stage's inputs come from: (stage index, output index), or None: source
    where: dict[int, tuple[int, int]] = {}
    for k, s in enumerate(stages):
        for j, port in enumerate(_outputs(s.block)):
            where[id(port)] = (k, j)
    srcs = [[where.get(id(x.port)) if x.port is not p.source.port else None for x in s.inputs]
            for s in stages]  # fmt: skip
    sink = where.get(id(p.sink.port)) if p.sink.port is not p.source.port else None
    # consumer of each output: (stage, input index), or "sink"
    cons: list[list[Any]] = [[None] * len(_outputs(s.block)) for s in stages]
    src_cons: Any = None
    for k, s in enumerate(srcs):
        for j, w in enumerate(s):
            if w is None:
                src_cons = (k, j)
            else:
                cons[w[0]][w[1]] = (k, j)
    if sink is None:
        src_cons = "sink"
    else:
        cons[sink[0]][sink[1]] = "sink"
    sent = got = 0
    firsts_in: list[int] = []
    firsts_out: list[int] = []
    limit = 1_000_000 + 50 * samples * (n_in + n_out) * max(len(stages), 1)
    for t in range(limit):
        valids = [m.valid() for m in models]
        readies: list[list[bool]] = [[] for _ in stages]
        oready: list[list[bool]] = [[] for _ in stages]
        for k in range(len(stages) - 1, -1, -1):
            oready[k] = [True if c == "sink" else readies[c[0]][c[1]] for c in cons[k]]
            ivalid = [sent < samples * n_in if w is None else valids[w[0]][w[1]] for w in srcs[k]]
            readies[k] = models[k].ready(ivalid, oready[k])
        src_valid = sent < samples * n_in
        if src_cons == "sink":
            src_take = src_valid
        else:
            src_take = src_valid and readies[src_cons[0]][src_cons[1]]
        if src_take:
            if sent % n_in == 0:
                firsts_in.append(t)
            sent += 1
        out_valid = src_valid if sink is None else valids[sink[0]][sink[1]]
        if out_valid:
            if got % n_out == 0:
                firsts_out.append(t)
            got += 1
            if got == samples * n_out:
                return np.array(firsts_in), np.array(firsts_out)
        for k, m in enumerate(models):
            ivalid = [src_valid if w is None else valids[w[0]][w[1]] for w in srcs[k]]
            takes = [v and r for v, r in zip(ivalid, readies[k], strict=True)]
            m.step(takes, oready[k])
    raise RuntimeError(f"the pipeline does not finish {samples} samples in {limit} cycles")


def steady_interval(p: Any) -> int:
    """Cycles between consecutive samples' first outputs in steady state: several
    samples through every block's cycle model, until the difference repeats."""
    samples = MIN_SAMPLES
    while True:
        _, outs = first_outputs(p, samples)
        d = np.diff(outs)
        if samples >= MAX_SAMPLES or (len(d) >= 3 and d[-1] == d[-2] == d[-3]):
            return int(d[-1])
        samples += 2
