"""Training under latency budgets against the uniform-parallelism, all-ReLU baseline.

Each budget trains the default MLP with GateActs (ReLU or a PolyAct per layer) by
`cosyn train --act gate --latency-budget B` on digits: the latency joins the loss held
by a Lagrange multiplier (`cosyn.models.train.BudgetPenalty`), the gates are hardened
within it, each layer's parallelism is allocated for it (`cosyn.scheduler.allocate`,
`target_latency`: the fewest multipliers that meet it) and the design is simulated on
Icarus, whose latency is the table's (equal to the estimate, or the command fails).
The baseline is the same MLP trained with ReLU (`cosyn train --act relu`), built with
one parallelism P for every layer (rounded up to a divisor of its outputs), P = 1 to 64;
its latency and LUTs are the performance model's (cycles exact, LUTs estimated on
ECP5-85F). A design is dominated by another at least as accurate, at most as slow and
at most as large (LUTs).

    .venv/bin/python benchmarks/training.py [--epochs 30] [--budgets 370cycles,4us] [--keep]

Each training takes 1-2 min on 2 cores (the checkpoints and reports stay in
out/bench/training/).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from cosyn.models import zoo
from cosyn.models.data import digits
from cosyn.perfmodel import estimate
from cosyn.perfmodel.pipeline import folded, resolve_parallelism
from rich.console import Console
from rich.table import Table

import cosyn

OUT = Path("out/bench/training")
BUDGETS = ("370cycles", "4us", "8us", "16us")  # at 100 MHz; 370: between the gates' corners
UNIFORM = (1, 2, 4, 8, 16, 32, 64)


def _train(args: list[str], out: Path, keep: bool) -> float | None:
    """Run `cosyn train ARGS --out out/model.pt` in a fresh process; its wall seconds (None:
    kept from an earlier run)."""
    if keep and (out / "model.pt").is_file():
        return None
    t0 = time.perf_counter()
    cosyn_cli = Path(sys.executable).with_name("cosyn")  # the venv's console script
    cmd = [str(cosyn_cli), "train", *args, "--out", str(out / "model.pt")]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    return time.perf_counter() - t0


def _uniform(g: cosyn.ir.Graph, p: int) -> dict[str, int]:
    """Every dense/conv2d node at parallelism p, rounded up to what it takes."""
    return {n.name: resolve_parallelism(n, min(p, int(n.shape[0])), 1)[0] for n in g if folded(n)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--budgets", default=",".join(BUDGETS))
    ap.add_argument("--keep", action="store_true", help="reuse the models trained before")
    args = ap.parse_args()
    epochs = ["--epochs", str(args.epochs)]
    points, took = [], {}
    for b in args.budgets.split(","):
        out = OUT / b
        took[b] = _train(["--act", "gate", "--latency-budget", b, *epochs], out, args.keep)
        r = json.loads((out / "train.json").read_text())
        a, sim = r["allocation"], r["simulation"]
        acts = ", ".join(r["choices"].values())
        name = f"budget {b} ({r['budget']['latency']:,} cycles)"
        lut = a["estimate"]["lut"]
        points.append((name, acts, r["accuracy"], sim["latency"], a["interval"],
                       a["multipliers"], lut))  # fmt: skip
    took["relu"] = _train(["--act", "relu", *epochs], OUT / "relu", args.keep)
    net = zoo.mlp(act="relu")
    net.load_state_dict(torch.load(OUT / "relu" / "model.pt", weights_only=True))
    d = digits()
    acc = cosyn.models.accuracy(net, d.x_test, d.y_test)
    g = cosyn.lower(net.eval(), d.x_test[:1])
    base = []
    for p in UNIFORM:
        par = _uniform(g, p)
        e = estimate(g, "ecp5-85f", par)
        base.append((f"uniform P={p}", "relu, relu", acc, e.latency, e.interval,
                     sum(par.values()), e.lut))  # fmt: skip

    t = Table(title=f"digits MLP on ECP5-85F, {args.epochs} epochs, seed 0")
    left = ("design", "activations", "dominated by")
    for c in ("design", "activations", "accuracy %", "latency", "interval", "multipliers",
              "LUT", "dominated by"):  # fmt: skip
        t.add_column(c, justify="left" if c in left else "right")
    rows = [*points, *base]
    for row in rows:
        who = [q[0].split(" (")[0] for q in rows if q is not row and q[2] >= row[2]
               and q[3] <= row[3] and q[6] <= row[6]]  # fmt: skip
        t.add_row(row[0], row[1], f"{row[2]:.2f}", f"{row[3]:,}", f"{row[4]:,}", str(row[5]),
                  f"{row[6]:,.0f}", ", ".join(who))  # fmt: skip
    t.caption = (
        "budgets: latency simulated on Icarus (= estimate); uniform: the performance model's "
        "cycles; LUT estimated. Training wall time: "
        + ", ".join(f"{k} {v:.0f} s" if v else f"{k} kept" for k, v in took.items())
    )
    Console(width=150).print(t)


if __name__ == "__main__":
    main()
