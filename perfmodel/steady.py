"""The pipeline's steady state: every block's control stepped together, cycle by cycle.

Sample 0's timing composes from each block's `timing` (the pipeline puts FIFOs where
a block would stall its producer within a sample). Consecutive samples interact: a
convolution whose line buffer is full stops taking its input while it still reads
rows, its producer's output register fills and that producer stops too, so the next
sample reaches the slow block later than at full rate. `steady_interval` models
that: it steps every block's control (`timing.control()`, see `perfmodel.blocks`)
together, with valid and ready between them, the input always offered and the
output always ready, for several samples, and returns the steady-state difference
between consecutive samples' first outputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["steady_interval"]

MIN_SAMPLES = 4
MAX_SAMPLES = 12


def first_outputs(p: Any, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """(cycle of each sample's first input transfer, cycle of its first output transfer)
    when `samples` samples stream through the plan `p`, the input always offered and
    the output always ready."""
    n_in, n_out = p.source.elements, p.sink.elements
    stages = p.stages
    models = [s.timing.control() for s in stages]
    # where each stage's inputs come from: (stage index, output index), or None: source
    srcs = [[None if x.stage is None else (x.stage, x.port) for x in s.inputs] for s in stages]
    sink = None if p.sink.stage is None else (p.sink.stage, p.sink.port)
    # consumer of each output: (stage, input index), or "sink"
    cons: list[list[Any]] = [[None] * s.timing.outputs for s in stages]
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


def _steady_interval(p: Any) -> int:
    samples = MIN_SAMPLES
    while True:
        _, outs = first_outputs(p, samples)
        d = np.diff(outs)
        if samples >= MAX_SAMPLES or (len(d) >= 3 and d[-1] == d[-2] == d[-3]):
            return int(d[-1])
        samples += 2
