"""Training under latency budgets against the uniform-parallelism, all-ReLU baseline.

Part 1, the front: `cosyn sweep --acts relu,gate` (Ray, two local workers) trains the
default CNN under each latency budget on digits, twice: with GateActs (ReLU or a PolyAct
per layer), where the latency (a sample's first input to its last output) joins the loss
held by a Lagrange multiplier, and the LUTs at the budget's parallelism with
`--lut-weight` (default 1), the gates hardened within the budget and fine-tuned; and as
it is, with ReLU (nothing in it moves the cost: trained as the baseline is). Each
layer's parallelism is allocated for the budget (`cosyn.scheduler.allocate`,
`target_latency`: the fewest resources that meet it) and the design is simulated on
Icarus, whose cycles are the table's (equal to the estimate, or the point fails). The
default budgets are the uniform designs' own latencies at P = 8, 4 and 2. The baseline
is the same CNN trained with ReLU (`cosyn train --act relu`), built with one parallelism
P for every layer (a conv2d's rounded up to a divisor of its outputs), P = 1 to 16, its
cycles and LUTs the performance model's.
A design is dominated by another at least as accurate, at most as slow and at most as
large (LUTs), and better in one of them. With `--seeds 0,1,2` every seed trains the
baseline and every budget, a table per seed, and a last one compares the designs
averaged over the seeds (mean accuracy and LUTs, the slowest seed's cycles); `--front`
stops there.

Part 2, the sweep's wall time on one local Ray worker and on two: two budgets, a few
epochs, trained afresh each time. Part 3, the cost term's share of a training step:
`BudgetPenalty` (the expected latency over the gates' choices, and its gradient) against
the same step without it.

Part 4, the gate's mixed-choice curve: the gated default MLP (hidden layers of 64 and 32
neurons, so their activations cost different amounts) trained at several weights of its
two-party secure-inference cost (`perfmodel.secure`: online bytes, `cosyn train
--secure-weight`, the span the gates move it in weighing `weight` units of the task loss),
each gate's probability of the polynomial at the end, its hardened choice, the hardened
model's test accuracy, and its secure bytes and rounds; `--curve` runs only this part.

    .venv/bin/python benchmarks/training.py [--epochs 30] [--budgets 27us,54us] [--keep]
        [--seeds 0,1,2] [--front]
    .venv/bin/python benchmarks/training.py --curve [--curve-epochs 30] [--points 0:0,1:10000]

Each training takes 1-2 min on one core (the checkpoints and reports stay in
out/bench/training/; --keep reuses them).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from cosyn.models import zoo
from cosyn.models.data import digits
from cosyn.models.sweep import Point, dominates, sweep
from cosyn.models.train import BudgetPenalty, take_statistics
from cosyn.perfmodel import estimate
from cosyn.perfmodel.pipeline import folded, resolve_parallelism
from rich.console import Console
from rich.table import Table

import cosyn

OUT = Path("out/bench/training")
MODEL = "cosyn.models.zoo:cnn"
UNIFORM = (1, 2, 4, 8, 16)  # 16: every layer at its outputs or 16
# the secure cost's weight (bytes alone), then the price of a round (at weights 1, 0.1, 10)
CURVE = ",".join(["0:0", "0.03:0", "0.1:0", "0.3:0", "1:0", "3:0", "10:0", "1:3000", "1:6000",
                  "1:10000", "1:20000", "1:50000", "0.1:10000", "10:10000"])  # fmt: skip


def _train(args: list[str], out: Path, keep: bool) -> float | None:
    """Run `cosyn train ARGS --out out/model.pt` in a fresh process on one torch thread,
    as the sweep's points train (so a point trained as the baseline is, is the same
    model); its wall seconds (None: kept from an earlier run)."""
    if keep and (out / "model.pt").is_file():
        return None
    t0 = time.perf_counter()
    cosyn_cli = Path(sys.executable).with_name("cosyn")  # the venv's console script
    cmd = [str(cosyn_cli), "train", *args, "--out", str(out / "model.pt")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    return time.perf_counter() - t0


def _uniform(g: cosyn.ir.Graph, p: int) -> dict[str, int]:
    """Every dense/conv2d node at parallelism p, rounded up to what it takes."""
    return {n.name: resolve_parallelism(n, min(p, int(n.shape[0])), 1)[0] for n in g if folded(n)}


def _baseline(epochs: int, keep: bool, seed: int) -> tuple[list[Point], float | None]:
    """The all-ReLU CNN trained with `seed`, at each uniform parallelism: points (budget:
    the design's name), and the training's wall seconds (None: kept)."""
    out = OUT / f"relu-s{seed}"
    args = [MODEL, "--act", "relu", "--epochs", str(epochs), "--seed", str(seed)]
    took = _train(args, out, keep)
    net = zoo.cnn(act="relu")
    net.load_state_dict(torch.load(out / "model.pt", weights_only=True))
    d = digits(image=True)
    acc = cosyn.models.accuracy(net, d.x_test, d.y_test)
    g = cosyn.lower(net.eval(), d.x_test[:1])
    points = []
    for p in UNIFORM:
        par = _uniform(g, p)
        e = estimate(g, "ecp5-85f", par)
        points.append(Point(f"uniform P={p}", seed, acc, e.completion, e.interval, float(e.lut),
                            sum(par.values()), {}, "relu"))  # fmt: skip
    return points, took


def _mean(points: list[Point]) -> Point:
    """One design over seeds: mean accuracy and LUTs, the slowest seed's cycles (seed -1)."""
    n = len(points)
    return dataclasses.replace(
        points[0],
        seed=-1,
        accuracy=sum(p.accuracy for p in points) / n,
        completion=max(p.completion for p in points),
        interval=max(p.interval for p in points),
        lut=sum(p.lut for p in points) / n,
        multipliers=max(p.multipliers for p in points),
    )


def _means(points: list[Point], base: list[Point]) -> tuple[list[Point], list[Point]]:
    """The budgets' points and the baseline's designs, each averaged over its seeds."""
    by: dict[tuple[bool, str, str], list[Point]] = {}
    for p in [*points, *base]:
        by.setdefault((p in base, p.budget, p.act), []).append(p)
    means = {k: _mean(v) for k, v in by.items()}
    return [m for k, m in means.items() if not k[0]], [m for k, m in means.items() if k[0]]


def _front_table(points: list[Point], base: list[Point], title: str, took: str) -> Table:
    t = Table(title=title)
    left = ("design", "activations", "dominated by", "dominates")
    for c in ("design", "activations", "accuracy %", "whole answer", "interval",
              "multipliers", "LUT", "dominated by", "dominates"):  # fmt: skip
        t.add_column(c, justify="left" if c in left else "right")

    def name(p: Point) -> str:
        if p in base:
            return p.budget
        return f"budget {p.budget}, {p.act}" + (f", seed {p.seed}" if p.seed >= 0 else "")

    rows = [*sorted(points, key=lambda p: p.completion), *base]
    for p in rows:
        by = [name(q) for q in rows if dominates(q, p)]
        over = [name(q) for q in rows if dominates(p, q)]
        t.add_row(name(p), p.activations, f"{p.accuracy:.2f}",
                  f"{p.completion:,}", f"{p.interval:,}", str(p.multipliers), f"{p.lut:,.0f}",
                  ", ".join(by), ", ".join(over))  # fmt: skip
    t.caption = (
        "cycles from a sample's first input to its last output: budgets' simulated on "
        f"Icarus (= estimate), uniform designs' the performance model's; LUT estimated. {took}"
    )
    return t


def _wall(budgets: list[str], epochs: int) -> Table:
    """The same small sweep trained afresh on one local Ray worker, then on two."""
    t = Table(title=f"cosyn sweep wall time: {len(budgets)} budgets, {epochs} epochs each")
    for c in ("Ray workers", "points", "wall s", "speed-up"):
        t.add_column(c, justify="right")
    first = None
    for w in (1, 2):
        out = OUT / f"wall-{w}"
        shutil.rmtree(out, ignore_errors=True)
        s = sweep(MODEL, budgets, out, epochs=epochs, workers=w, progress=False, lut_weight=1.0)
        first = first or s.wall_s
        t.add_row(str(w), str(len(s.points)), f"{s.wall_s:.0f}", f"{first / s.wall_s:.2f}x")
    t.caption = "a local Ray instance each; every point a fresh process on one torch thread"
    return t


def _overhead(steps: int = 60) -> Table:
    """A training step's wall time (the gated CNN, batch 64; mean of `steps`) and the cost
    term's own (`BudgetPenalty`: the expected latency over the gates' choices and its
    gradient; mean of `steps` calls), measured apart, since the step varies by more than
    the term costs on shared cores; and the one-time cost table."""
    d = digits(image=True)
    torch.manual_seed(0)
    net = zoo.cnn(act="gate")
    take_statistics(net, d.x_train[:256])
    penalty = BudgetPenalty(d.x_test[:1], "ecp5-85f", "completion", 400)
    t0 = time.perf_counter()
    penalty(net)  # the cost table: one estimate per combination of the gates' choices
    table_s = time.perf_counter() - t0
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    t0 = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(0, len(d.x_train), (64,))
        out = net(d.x_train[idx])
        loss = torch.nn.functional.cross_entropy(getattr(out, "value", out), d.y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    step = (time.perf_counter() - t0) / steps * 1e3
    t0 = time.perf_counter()
    for _ in range(steps):
        penalty(net).backward()
    term = (time.perf_counter() - t0) / steps * 1e3
    t = Table(title="the cost term's share of a training step (gated CNN, batch 64)")
    for c in ("step ms", "cost term ms", "share", "cost table once s"):
        t.add_column(c, justify="right")
    t.add_row(f"{step:.1f}", f"{term:.2f}", f"{term / step:.1%}", f"{table_s:.2f}")
    t.caption = f"means of {steps} steps and of {steps} calls with their gradient"
    return t


def _curve(points: list[tuple[float, float]], epochs: int, seed: int = 0) -> Table:
    """The gated MLP trained at each (weight, bytes a round is worth) of its secure cost
    (`SpanWeight` of online bytes + that price x online rounds, as `cosyn train
    --secure-weight --round-bytes`), then hardened (each gate to its likelier choice)."""
    from cosyn.models import harden
    from cosyn.models.gate import gates
    from cosyn.models.train import SpanWeight, accuracy, fit
    from cosyn.perfmodel.loss import cost_table
    from cosyn.perfmodel.secure import secure_metrics

    d = digits()
    x0 = d.x_test[:1]
    torch.manual_seed(seed)
    net = zoo.mlp(act="gate")
    take_statistics(net, d.x_train[:256])
    even = _break_even(cost_table(net, x0))
    rows = []
    for w, per_round in points:
        torch.manual_seed(seed)
        net = zoo.mlp(act="gate")
        take_statistics(net, d.x_train[:256])
        mix = {"secure_bytes": 1.0, "secure_rounds": per_round}
        term = SpanWeight(x0, "ecp5-85f", mix, w) if w > 0 else None
        t0 = time.perf_counter()
        fit(net, d, epochs=epochs, seed=seed, extra_loss=term, quiet=True)
        took = time.perf_counter() - t0
        probs = {n: float(g.probs().detach()[1]) for n, g in gates(net).items()}
        choices = harden(net)
        acc = accuracy(net, d.x_test, d.y_test)
        m = secure_metrics(cosyn.lower(net.eval(), x0))
        rows.append((w, per_round, probs, choices, acc, m, took))
    t = Table(title=f"secure-inference cost vs the gates' choices (gated MLP 64-64-32-10, "
                    f"{epochs} epochs, seed {seed})")  # fmt: skip
    names = list(rows[0][2])
    for c in ("weight", "bytes per round"):
        t.add_column(c, justify="right")
    for n in names:
        t.add_column(f"gate {n}: P(poly) -> choice")
    for c in ("accuracy %", "online bytes", "rounds", "preprocessing bytes", "train s"):
        t.add_column(c, justify="right")
    for w, per_round, probs, choices, acc, m, took in rows:
        t.add_row(f"{w:g}", f"{per_round:,.0f}",
                  *[f"{probs[n]:.3f} -> {choices[n]}" for n in names], f"{acc:.2f}",
                  f"{m['secure_bytes']:,.0f}", f"{m['secure_rounds']:.0f}",
                  f"{m['secure_offline_bytes']:,.0f}", f"{took:.0f}")  # fmt: skip
    t.caption = (
        "loss: task + weight x (cost - least) / (most - least), cost = online bytes + bytes "
        "per round x online rounds (perfmodel.secure: ReLU by half-gates garbled circuits, "
        "1 round; degree-2 polynomial by 2 Beaver multiplications, 2 rounds; per sample). "
        "Bytes per round at which a gate's two choices cost the same (the untrained "
        "model's widths): " + ", ".join(f"gate {n} {v:,.0f}" for n, v in even.items())
    )
    return t


def _break_even(table) -> dict[str, float]:
    """Per gate: the bytes per round at which its polynomial (fewer bytes, more rounds)
    costs what its ReLU does, the others ReLU (secure costs add up over layers)."""
    base = table.values[table.base]
    even = {}
    for k, name in enumerate(table.names):
        flip = table.values[(*table.base[:k], 1, *table.base[k + 1 :])]
        saved = base["secure_bytes"] - flip["secure_bytes"]
        even[name] = saved / (flip["secure_rounds"] - base["secure_rounds"])
    return even


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--budgets", help="default: the uniform designs' latencies at P=8, 4, 2")
    ap.add_argument("--lut-weight", type=float, default=1.0)
    ap.add_argument("--acts", default="relu,gate", help="the sweep's activations")
    ap.add_argument("--seeds", default="0", help="comma-separated; the baseline too")
    ap.add_argument("--front", action="store_true", help="only the front (part 1)")
    ap.add_argument("--wall-epochs", type=int, default=5)
    ap.add_argument("--keep", action="store_true", help="reuse the models trained before")
    ap.add_argument("--curve", action="store_true", help="only the gate's mixed-choice curve")
    ap.add_argument("--curve-epochs", type=int, default=30)
    ap.add_argument("--points", default=CURVE,
                    help="the curve's weight:bytes-per-round pairs, comma-separated")  # fmt: skip
    args = ap.parse_args()
    console = Console(width=160)
    torch.set_num_threads(1)
    curve = [tuple(float(v) for v in p.split(":")) for p in args.points.split(",")]
    if args.curve:
        console.print(_curve(curve, args.curve_epochs))
        return
    seeds = [int(x) for x in args.seeds.split(",")]
    base, took = [], 0.0
    for seed in seeds:
        points, t = _baseline(args.epochs, args.keep, seed)
        base, took = base + points, took + (t or 0.0)
    by_p = {p.budget: p for p in base if p.seed == seeds[0]}
    budgets = (args.budgets.split(",") if args.budgets else
               [f"{by_p[f'uniform P={p}'].completion}cycles" for p in (8, 4, 2)])  # fmt: skip
    out = OUT / "sweep"
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    s = sweep(MODEL, budgets, out, seeds=seeds, epochs=args.epochs, workers=2,
              lut_weight=args.lut_weight, acts=args.acts.split(","))  # fmt: skip
    for k, tail in s.failed.items():
        console.print(f"{k} failed:\n{tail}")
    relu = f"{took:.0f} s" if took else "kept"
    note = f"Training: the sweep {s.wall_s:.0f} s on two Ray workers, the ReLU models {relu}."
    title = f"digits CNN on ECP5-85F, {args.epochs} epochs"
    for seed in seeds:
        mine = [p for p in s.points if p.seed == seed]
        console.print(_front_table(mine, [p for p in base if p.seed == seed],
                                   f"{title}, seed {seed}", note))  # fmt: skip
    if len(seeds) > 1:
        points, designs = _means(s.points, base)
        mean = "accuracy and LUTs: means; cycles: the slowest seed's"
        console.print(_front_table(points, designs, f"{title}, mean of seeds {args.seeds}", mean))
    if args.front:
        return
    console.print(_wall(budgets[-2:], args.wall_epochs))
    console.print(_overhead())
    console.print(_curve(curve, args.curve_epochs))


if __name__ == "__main__":
    main()
