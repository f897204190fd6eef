"""Performance model: estimate error against synthesis, and estimate time against synthesis time.

Part 1 reads `perfmodel/calibration.json` (written by `python -m cosyn.perfmodel.calibrate`,
which synthesizes the sweep with yosys and nextpnr): per device and metric, the mean
absolute percentage error and the worst case of the estimate on the held-out designs
(those not used for fitting), and how many DSP and BRAM counts are exact. Part 2 times
`cosyn.perfmodel.estimate` of the default design (the allocation `cosyn.rtl.generate`
builds) of the zoo's MLP and CNN and a CNN of a million MACs per sample at its
parallelism, cold (the first call in a fresh process, empty caches) and warm (the same
again, as in a training loop or a design-space search), and the allocation itself,
beside the synthesis time of the sweep's designs (the ratio is synthesis over a cold
estimate). Part 3 times the differentiable
cost (`cosyn.perfmodel.cost`) against a training step.

    .venv/bin/python benchmarks/perfmodel.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import torch
from cosyn.models.zoo import cnn, mlp
from cosyn.perfmodel import calibrate, estimate
from cosyn.scheduler.parallelism import design_parallelism
from rich.console import Console
from rich.table import Table

import cosyn

METRICS = ("lut", "ff", "dsp", "bram", "fmax_mhz")


def _errors(rows: list[dict], dev: str) -> dict[str, tuple[float, float, int, int]]:
    """metric -> (MAPE %, worst %, exact count, designs measured) on `rows`."""
    est = {r["config"]["name"]: calibrate.estimate_of(calibrate.Config(**{
        k: v for k, v in r["config"].items() if k != "name"}), dev) for r in rows}  # fmt: skip
    out = {}
    for m in METRICS:
        pairs = [(est[r["config"]["name"]][m], r["synth"][m]) for r in rows
                 if r["synth"][m] is not None]  # fmt: skip
        if not pairs:
            continue
        e, s = np.array(pairs, dtype=float).T
        pct = np.abs(e - s) / np.maximum(s, 1) * 100
        out[m] = (float(pct.mean()), float(pct.max()), int(np.sum(np.round(e) == s)), len(e))
    return out


def error_table(console: Console) -> None:
    record = json.loads(calibrate.RECORD.read_text())
    t = Table(title="estimate vs synthesis, held-out designs (not used for fitting)")
    for c in ("device", "designs", "metric", "MAPE %", "worst %", "exact (of designs)"):
        t.add_column(c, justify="left" if c in ("device", "metric") else "right")
    for dev, d in record["devices"].items():
        held = d["rows"][1::2]
        for m, (mape, worst, exact, n) in _errors(held, dev).items():
            t.add_row(dev, str(n), m, f"{mape:.1f}", f"{worst:.1f}", f"{exact}")
    console.print(t)


def _synth_seconds() -> tuple[float, float]:
    record = json.loads(calibrate.RECORD.read_text())
    secs = [r["synth"].get("yosys_s", 0) + (r["synth"].get("pnr_s") or 0)
            for d in record["devices"].values() for r in d["rows"]]  # fmt: skip
    return float(np.median(secs)), float(np.max(secs))


MODELS = {  # name -> (factory, input shape)
    "mlp": (lambda: mlp(act="poly"), (64,)),
    "cnn": (lambda: cnn(act="poly"), (1, 8, 8)),
    "cnn-1M": (lambda: cnn(channels=(32, 64), size=16, act="poly"), (1, 16, 16)),
}
RUNS = 5  # fresh processes per model; the table shows the median


def _graph(name: str) -> cosyn.ir.Graph:
    torch.manual_seed(0)
    factory, shape = MODELS[name]
    return cosyn.lower(factory().eval(), torch.zeros(1, *shape))


def time_one(name: str, parallelism: str) -> None:
    """In this (fresh) process: with `parallelism` (JSON) the first estimate of `name` at
    it (cold: empty caches), then the mean of ten more (warm, as in a training loop or a
    design-space search); prints MACs, cold and warm s. With "null": the first
    allocation of its default design (`design_parallelism`, cold); prints its s."""
    g = _graph(name)
    par = json.loads(parallelism)
    t0 = time.perf_counter()
    if par is None:
        design_parallelism(g, "ecp5-85f")
        print(json.dumps(time.perf_counter() - t0))
        return
    estimate(g, "ecp5-85f", par)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(10):
        estimate(g, "ecp5-85f", par)
    print(json.dumps([g.macs, cold, (time.perf_counter() - t0) / 10]))


def _child(name: str, parallelism) -> object:
    args = [sys.executable, __file__, "--time", name, json.dumps(parallelism)]
    return json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)


def _times(name: str) -> tuple[int, float, float, float]:
    """(MACs, median cold s, median warm s, median allocation s) over RUNS fresh
    processes each, the estimate at the default design's parallelism (the allocation)."""
    par = design_parallelism(_graph(name), "ecp5-85f")
    runs = [_child(name, par) for _ in range(RUNS)]
    cold, warm = (float(np.median([r[k] for r in runs])) for k in (1, 2))
    alloc = float(np.median([_child(name, None) for _ in range(RUNS)]))
    return runs[0][0], cold, warm, alloc


def speed_table(console: Console) -> None:
    median, worst = _synth_seconds()
    t = Table(title=f"estimate time (ecp5-85f), median of {RUNS} fresh processes")
    for c in ("model", "MACs", "cold ms", "warm ms", "allocation ms",
              "synthesis of one sweep design s", "ratio"):  # fmt: skip
        t.add_column(c, justify="left" if c == "model" else "right")
    for name in MODELS:
        macs, cold, warm, alloc = _times(name)
        t.add_row(name, f"{macs:,}", f"{cold * 1e3:.1f}", f"{warm * 1e3:.2f}",
                  f"{alloc * 1e3:.0f}", f"{median:.0f} (max {worst:.0f})",
                  f"{median / cold:,.0f}x")  # fmt: skip
    t.caption = (
        "the default design (the allocation for ecp5-85f) estimated at its parallelism; "
        "cold: the first estimate in a fresh process (empty caches); warm: the same again; "
        "allocation: choosing that parallelism, cold"
    )
    console.print(t)


def cost_table(console: Console) -> None:
    """`cosyn.perfmodel.cost` in a training step: the zoo models with GateActs, a batch
    of 64 digits; median CPU time over 30 steps of the step alone and of the cost and its
    backward (the table built before, as training does once)."""
    t = Table(title="the hardware cost term in a training step (CPU time, median of 30)")
    for c in ("model", "table built s", "step ms", "cost + backward ms", "overhead"):
        t.add_column(c, justify="left" if c == "model" else "right")
    for name in ("mlp", "cnn"):
        torch.manual_seed(0)
        shape = MODELS[name][1]
        model = (mlp(act="gate") if name == "mlp" else cnn(act="gate")).eval()
        x = torch.rand(64, *shape)
        model(x)
        model.train()
        t0 = time.process_time()
        cosyn.perfmodel.cost(model, x)
        built = time.process_time() - t0
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        y = torch.zeros(64, dtype=torch.long)
        steps, costs = [], []
        for _ in range(30):
            t0 = time.process_time()
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            t1 = time.process_time()
            cosyn.perfmodel.cost(model, x).backward()
            steps.append(t1 - t0)
            costs.append(time.process_time() - t1)
        step, c = float(np.median(steps)), float(np.median(costs))
        t.add_row(name, f"{built:.1f}", f"{step * 1e3:.1f}", f"{c * 1e3:.2f}", f"{c / step:.1%}")
    console.print(t)


def main() -> None:
    console = Console(width=140)
    error_table(console)
    speed_table(console)
    cost_table(console)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--time"]:
        time_one(sys.argv[2], sys.argv[3])
    else:
        main()
