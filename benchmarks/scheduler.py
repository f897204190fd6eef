"""Parallelism allocation against uniform parallelism.

For each model: `cosyn.scheduler.allocate` (the smallest interval that fits the device,
each node balanced to it; a conv2d may take SIMD, (P, S)), beside uniform parallelism
(every dense/conv2d node the same P, a grouped conv's rounded up to a divisor of its
outputs) at the smallest P whose multipliers are at least the allocation's (the
largest where none is); then, for each uniform P, the smallest interval an
allocation reaches with at most its multipliers. Busy is the multipliers' steady-state use:
MACs per sample / (multipliers x interval). Intervals are exact (the pipeline's steady
state, equal to RTL simulation); LUTs are estimates (`cosyn.perfmodel`). The models are
untrained: random weights (a dense block skips a term only where its P weights are all
zero, `perfmodel.blocks.sparse_terms`; a trained model's can differ there).

CNV (FINN's CNV-w2a2 from brevitas_examples) is allocated on xcu250: at any parallelism
its weights, in LUT ROM banks as the RTL places them, need more LUTs than an ECP5-85F has.

    .venv/bin/python benchmarks/scheduler.py [--models mlp,cnn,cnn-1M,cnv-w2a2]
"""

from __future__ import annotations

import argparse
import time

import torch
from cosyn.models.zoo import cnn, mlp
from cosyn.perfmodel.pipeline import folded, resolve_parallelism
from cosyn.scheduler import allocate
from rich.console import Console
from rich.table import Table

import cosyn


def _cnv() -> torch.nn.Module:
    from brevitas_examples.bnn_pynq.models import model_with_cfg

    return model_with_cfg("cnv_2w2a", pretrained=False)[0]


MODELS = {  # name -> (factory, input shape, device)
    "mlp": (lambda: mlp(act="poly"), (64,), "ecp5-85f"),
    "cnn": (lambda: cnn(act="poly"), (1, 8, 8), "ecp5-85f"),
    "cnn-1M": (lambda: cnn(channels=(32, 64), size=16, act="poly"), (1, 16, 16), "ecp5-85f"),
    "cnv-w2a2": (_cnv, (3, 32, 32), "xcu250"),
}


def _uniforms(g: cosyn.ir.Graph) -> list[tuple[int, dict[str, int]]]:
    """Uniform parallelism: each power of two P up to the most outputs of a node, and
    the parallelism it gives each node (its outputs where fewer; a grouped conv's
    rounded up to a divisor of a group's)."""
    nodes = [n for n in g if folded(n)]
    out, u = [], 1
    while True:
        out.append((u, {n.name: resolve_parallelism(n, min(u, int(n.shape[0])), 1)[0]
                        for n in nodes}))  # fmt: skip
        if u >= max(int(n.shape[0]) for n in nodes):
            return out
        u *= 2


def _within(g: cosyn.ir.Graph, dev: str, mults: int, hi: int) -> cosyn.scheduler.Allocation:
    """The allocation of the smallest interval (at most `hi`) whose multipliers are at
    most `mults`: bisection over `allocate`'s target interval (fewer cycles, more
    multipliers)."""
    lo, best = 1, allocate(g, dev, target_interval=hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            a = allocate(g, dev, target_interval=mid)
        except cosyn.errors.CosynError:  # below the slowest block's floor, or not reached
            lo = mid
            continue
        if a.multipliers <= mults:
            hi, best = min(mid, a.interval), a
        else:
            lo = mid
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args()
    t = Table(title="parallelism: allocated vs uniform with at least as many multipliers")
    cols = ("model", "device", "MACs", "uniform P", "mults", "interval", "busy",
            "allocated mults", "interval", "busy", "LUT", "speedup", "allocate s")  # fmt: skip
    same = Table(title="at equal multipliers: uniform P vs the allocation of at most as many")
    for c in ("model", "uniform P", "mults", "interval", "allocated mults", "interval", "speedup"):
        same.add_column(c, justify="left" if c == "model" else "right")
    for c in cols:
        t.add_column(c, justify="left" if c in ("model", "device") else "right")
    for name in args.models.split(","):
        factory, shape, dev = MODELS[name]
        torch.manual_seed(0)
        g = cosyn.lower(factory().eval(), torch.rand(2, *shape))
        t0 = time.perf_counter()
        a = allocate(g, dev)
        secs = time.perf_counter() - t0
        uniforms = [(u, par, sum(par.values())) for u, par in _uniforms(g)]
        u, par, mults = next((x for x in uniforms if x[2] >= a.multipliers), uniforms[-1])
        e = cosyn.perfmodel.estimate(g, dev, par)
        macs = sum(a.macs.values())
        busy = macs / (mults * e.interval)
        uniform = (str(u), str(mults), f"{e.interval:,}", f"{busy:.0%}")
        ours = (str(a.multipliers), f"{a.interval:,}", f"{a.utilization:.0%}")
        ours += (f"{a.estimate.lut:,}",)
        t.add_row(name, dev, f"{macs:,}", *uniform, *ours, f"{e.interval / a.interval:.2f}x",
                  f"{secs:.1f}")  # fmt: skip
        if name not in SEARCHED:
            continue
        for u, par, mults in uniforms:
            iv = cosyn.perfmodel.estimate(g, dev, par).interval
            b = _within(g, dev, mults, iv)
            same.add_row(name, str(u), str(mults), f"{iv:,}", str(b.multipliers),
                         f"{b.interval:,}", f"{iv / b.interval:.2f}x")  # fmt: skip
    Console(width=180).print(t)
    same.caption = (
        "searched for " + ", ".join(SEARCHED) + " (bisection over allocate's target interval; "
        "an allocation of the others takes a minute)"
    )
    Console(width=180).print(same)


SEARCHED = ("mlp", "cnn")


if __name__ == "__main__":
    main()
