"""Hardware-aware sparsity: accuracy and cycles of a default model with 80% of its weights zero.

Per seed, the default ReLU MLP (`--model cnn`: the default CNN, its convolutions masked
too) is trained dense on digits (30 epochs), then masked to 20% of its weight blocks
(`models.sparsity.Masks`, blocks of P outputs by one input, P the layer's parallelism in
the design) and trained on for 20 epochs three ways: magnitude pruning once (the mask
fixed), RigL (drop and grow by gradient every 20 steps) and DST-EE (the same, plus the
exploration bonus). Each model is lowered, planned at the design's parallelism, and
simulated in the Amaranth simulator on a few test digits: bit-exact against the golden
model, on the plan's latency and interval (the table's cycles are the simulator's).
"every term" is the planned interval of the same design with no zero weight (what the
blocks did before they skipped zero weights); the dense model's 4-bit weights already
hold zeros, which it skips where they make whole blocks.

    .venv/bin/python benchmarks/sparsity.py [--model mlp|cnn] [--seeds 0,1,2] [--parallelism 1]
"""

from __future__ import annotations

import argparse
import copy

import numpy as np
import torch
from cosyn.hw.rtl import Top
from cosyn.hw.rtl._tb import run_top
from cosyn.models.data import digits
from cosyn.models.sparsity import METHODS, Masks
from cosyn.models.train import fit
from cosyn.models.zoo import cnn, mlp
from cosyn.perfmodel.conv import ConvTiming
from cosyn.perfmodel.pipeline import plan
from rich.console import Console
from rich.table import Table

import cosyn

# model -> (factory, its masked layers (names in the Sequential) -> their nodes)
MODELS = {
    "mlp": (mlp, {"1": "dense_1", "3": "dense_3", "5": "dense_5"}),
    "cnn": (cnn, {"1": "conv2d_1", "3": "conv2d_3", "6": "dense_6"}),
}


def _terms(t) -> tuple[int, int]:
    """(terms a sample issues, terms without skipping) of a dense or conv2d timing."""
    if isinstance(t, ConvTiming):
        g = t.geo
        return g.oh * g.ow * sum(g.issued), g.oh * g.ow * g.groups * g.terms
    return sum(t.terms), t.groups * t.n


def _measure(model: torch.nn.Module, data, par: dict[str, int]) -> tuple:
    """(integer weights zero, latency, interval, every-term interval, terms issued, all
    terms) of the model's design, simulated: raises where the simulation differs from
    the golden model or the plan."""
    g = cosyn.lower(model.eval(), data.x_train[:64])
    pl = plan(g, par)
    xi = g.quantize(data.x_test[:4].numpy())
    y, ins, outs = run_top(Top(pl), xi)
    assert np.array_equal(y, g.run_int(xi)), "not bit-exact"
    latency, interval = int(outs[0, 0] - ins[0, 0]), int(np.diff(outs[:, 0])[-1])
    assert (latency, interval) == (pl.latency, pl.interval), "cycles differ from the plan"
    nodes = [n for n in g if n.name in par]
    zero = sum(int((n.weight == 0).sum()) for n in nodes) / sum(n.weight.size for n in nodes)
    full = copy.deepcopy(g)  # the same design, no weight zero: every term issued
    for n in full:
        if n.name in par:
            n.weight = np.where(n.weight == 0, 1, n.weight)
    every = plan(full, par).interval
    terms, total = map(sum, zip(*(_terms(s.timing) for s in pl.stages if s.name in par),
                                strict=True))  # fmt: skip
    return zero, latency, interval, every, terms, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mlp", choices=sorted(MODELS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--parallelism", type=int, default=1, help="P of every layer (divides 10)")
    ap.add_argument("--density", type=float, default=0.2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    factory, layers = MODELS[args.model]
    data = digits(image=args.model == "cnn")
    block = dict.fromkeys(layers, args.parallelism)
    par = dict.fromkeys(layers.values(), args.parallelism)
    t = Table(title=f"the default {args.model.upper()}, {1 - args.density:.0%} of weight blocks "
                    f"masked, P = {args.parallelism}, simulated (Amaranth)")  # fmt: skip
    for c in ("seed", "model", "accuracy %", "vs dense", "integer weights zero", "terms issued",
              "latency", "interval", "every term", "speed-up"):  # fmt: skip
        t.add_column(c, justify="left" if c == "model" else "right")
    for seed in map(int, args.seeds.split(",")):
        torch.manual_seed(seed)
        model = factory()
        base = fit(model, data, epochs=30, seed=seed, quiet=True)
        trained = {k: v.clone() for k, v in model.state_dict().items()}
        for name, kw in {"dense": None, **METHODS}.items():
            model.load_state_dict(trained)
            acc = base
            if kw is not None:
                masks = Masks(model, args.density, block, stop=15 * len(data.x_train) // 64, **kw)
                acc = fit(model, data, epochs=20, lr=5e-3, seed=seed, quiet=True,
                          on_step=masks.prune().step)  # fmt: skip
            zero, latency, interval, every, terms, total = _measure(model, data, par)
            t.add_row(str(seed), name, f"{acc:.2f}", f"{acc - base:+.2f}", f"{zero:.0%}",
                      f"{terms:,} of {total:,}", f"{latency:,}", f"{interval:,}", f"{every:,}",
                      f"{every / interval:.2f}x")  # fmt: skip
    Console(width=150).print(t)


if __name__ == "__main__":
    main()
