"""Parallelism allocation against uniform parallelism.

For each model: `cosyn.scheduler.allocate` (the smallest interval that fits the device,
each node balanced to it), beside uniform parallelism (every dense/conv2d node the same
P, a conv2d's rounded up to a divisor of its outputs) at the smallest P whose
multipliers are at least the allocation's. Busy is the multipliers' steady-state use:
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


def _uniform(g: cosyn.ir.Graph, least: int) -> tuple[int, dict[str, int]]:
    """The smallest uniform P, a power of two, whose multipliers are at least `least`
    (every node's outputs where none is), and the parallelism it gives each node."""
    nodes = [n for n in g if folded(n)]
    u = 1
    while True:
        par = {n.name: resolve_parallelism(n, min(u, int(n.shape[0])), 1)[0] for n in nodes}
        if sum(par.values()) >= least or u >= max(int(n.shape[0]) for n in nodes):
            return u, par
        u *= 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args()
    t = Table(title="parallelism: allocated vs uniform with at least as many multipliers")
    cols = ("model", "device", "MACs", "uniform P", "mults", "interval", "busy",
            "allocated mults", "interval", "busy", "LUT", "speedup", "allocate s")  # fmt: skip
    for c in cols:
        t.add_column(c, justify="left" if c in ("model", "device") else "right")
    for name in args.models.split(","):
        factory, shape, dev = MODELS[name]
        torch.manual_seed(0)
        g = cosyn.lower(factory().eval(), torch.rand(2, *shape))
        t0 = time.perf_counter()
        a = allocate(g, dev)
        secs = time.perf_counter() - t0
        u, par = _uniform(g, a.multipliers)
        e = cosyn.perfmodel.estimate(g, dev, par)
        mults = sum(par.values())
        busy = sum(a.macs.values()) / (mults * e.interval)
        macs = sum(a.macs.values())
        uniform = (str(u), str(mults), f"{e.interval:,}", f"{busy:.0%}")
        ours = (str(a.multipliers), f"{a.interval:,}", f"{a.utilization:.0%}")
        ours += (f"{a.estimate.lut:,}",)
        t.add_row(name, dev, f"{macs:,}", *uniform, *ours, f"{e.interval / a.interval:.2f}x",
                  f"{secs:.1f}")  # fmt: skip
    Console(width=180).print(t)


if __name__ == "__main__":
    main()
