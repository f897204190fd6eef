"""ReLU vs PolyAct vs learned GateAct on digits, and the golden model's exactness for each.

Run: .venv/bin/python benchmarks/polyact.py [--quick]. Seeds are fixed: every model is
built after torch.manual_seed(0) and trained with fit(seed=0). Rows:
- float ReLU: the same topology in float32 (nn.Linear / nn.Conv2d + nn.ReLU);
- quantized ReLU: the zoo default (4-bit weights, 8-bit activations), 30 epochs;
- PolyAct (converted): that model with every QuantReLU replaced by a degree-2 PolyAct
  fitted to ReLU over the training inputs (models.replace_relu), fine-tuned;
- PolyAct (from scratch): zoo factory with act="poly", trained like the ReLU model;
- GateAct, lambda = w: GateActs trained with w * expected cost in the loss under a
  secure-inference cost table (a ReLU costs 1, a polynomial 0.1, per activation layer),
  hardened, fine-tuned; "poly layers" counts the layers that chose the polynomial.
"mismatches" counts test vectors where the golden model differs from the model (any bit).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from cosyn.models import data, finetune_poly, fit, search_gates, zoo
from cosyn.models.gate import gates
from cosyn.models.train import predict
from rich.console import Console
from rich.table import Table
from torch import nn

import cosyn

SEED = 0
COSTS = {"relu": 1.0, "poly": 0.1}  # secure two-party inference: a comparison per ReLU
WEIGHTS = (0.0, 0.1, 1.0)


def float_mlp() -> nn.Module:
    """The zoo's default MLP in float32 with ReLU."""
    return nn.Sequential(
        nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)
    )


def float_cnn() -> nn.Module:
    """The zoo's default CNN in float32 with ReLU."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(16 * 4 * 4, 10),
    )  # fmt: skip


def mismatches(model: nn.Module, x: torch.Tensor) -> int:
    """Test vectors where the golden model's float32 output differs from the model's."""
    g = cosyn.lower(model, x[:2])
    return int(np.count_nonzero((g.run(x.numpy()) != predict(model, x).numpy()).any(axis=1)))


def seeded(factory, **kw) -> nn.Module:
    torch.manual_seed(SEED)
    return factory(**kw)


def rows_for(name: str, factory, float_factory, image: bool, epochs: int) -> list[tuple]:
    d = data.digits(image=image)
    rows = []

    def row(label: str, model: nn.Module, acc: float, t0: float, poly: str = "", exact=True):
        bad = str(mismatches(model, d.x_test)) if exact else "-"
        rows.append((name, label, f"{acc:.2f}", poly, bad, f"{time.perf_counter() - t0:.0f}"))
        print(*rows[-1], sep=" | ", flush=True)

    t0 = time.perf_counter()
    acc = fit(seeded(float_factory), d, epochs=epochs, seed=SEED, quiet=True)
    rows.append((name, "float32 ReLU", f"{acc:.2f}", "", "-", f"{time.perf_counter() - t0:.0f}"))
    t0 = time.perf_counter()
    relu = seeded(factory)
    row("quantized ReLU", relu, fit(relu, d, epochs=epochs, seed=SEED, quiet=True), t0, "0")
    n = len(gates(zoo.mlp(act="gate") if not image else zoo.cnn(act="gate")))
    t0 = time.perf_counter()
    poly, acc = finetune_poly(relu, d, epochs=epochs * 2 // 3, seed=SEED)
    row("PolyAct (converted)", poly, acc, t0, f"{n}/{n}")
    t0 = time.perf_counter()
    scratch = seeded(factory, act="poly")
    acc = fit(scratch, d, epochs=epochs, seed=SEED, quiet=True)
    row("PolyAct (from scratch)", scratch, acc, t0, f"{n}/{n}")
    for w in WEIGHTS:
        t0 = time.perf_counter()
        gated, acc, choices = search_gates(
            relu, d, w, COSTS, epochs=epochs // 2, harden_epochs=epochs // 6, seed=SEED
        )
        k = sum(c == "poly" for c in choices.values())
        row(f"GateAct, lambda={w:g}", gated, acc, t0, f"{k}/{n}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 epochs instead of 30 (smoke run)")
    parser.add_argument("--only", choices=("mlp", "cnn"), help="one model only")
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny models: threads only contend
    epochs = 6 if args.quick else 30
    rows = []
    for name, factory, float_factory, image in (
        ("mlp", zoo.mlp, float_mlp, False),
        ("cnn", zoo.cnn, float_cnn, True),
    ):
        if args.only in (None, name):
            rows += rows_for(name, factory, float_factory, image, epochs)
    table = Table(
        title=f"PolyAct on digits (360 test images; seed {SEED}; {epochs} epochs for ReLU models)"
    )
    for col in ("model", "activation", "test acc %", "poly layers", "mismatches", "time (s)"):
        table.add_column(col, justify="left" if col in ("model", "activation") else "right")
    for r in rows:
        table.add_row(*r)
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
