"""RTL backend: generated designs, simulated in cocotb on Icarus and Verilator, bit-exact.

For each model and parallelism: `cosyn.rtl.generate`, then the digits test set streamed
through the design on each simulator with random input gaps and back-pressure, every
output compared with the golden model. Prints vectors, mismatches (wrong, lost and
duplicated elements and protocol errors, over all simulators), latency and interval
in cycles as measured (a `*` where they differ from the manifest), the ideal interval
ceil(MACs / multipliers), multiplier utilization MACs / (multipliers * interval), the
same for the busiest layer alone (its multipliers' duty cycle: near 100% when the
dense/conv blocks keep their multipliers busy), and simulation speed in vectors per
second on each simulator.

    .venv/bin/python benchmarks/rtl.py [--epochs 3] [--parallelism default,8]
        [--vectors N] [--sims icarus,verilator] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import math
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from cosyn.hw.rtl import generate
from cosyn.models.data import digits
from cosyn.models.train import fit
from cosyn.models.zoo import cnn, mlp
from cosyn.sim import simulate

import cosyn
from cosyn.errors import CosynError
from cosyn.ir.graph import Graph

MODELS = {"mlp": (mlp, False), "cnn": (cnn, True)}
SIMS = ("icarus", "verilator")


def trained(name: str, epochs: int) -> tuple[Graph, np.ndarray, str]:
    """The zoo model `name` trained for `epochs` (calibrated only with 0), lowered; the
    test inputs; a note with the accuracy."""
    factory, image = MODELS[name]
    data = digits(image=image)
    torch.manual_seed(0)
    model = factory()
    if epochs:
        acc = fit(model, data, epochs=epochs, quiet=True)
        note = f"{name}: trained {epochs} epochs, test accuracy {acc:.1f}%"
    else:
        model.train()
        with torch.no_grad():
            model(data.x_train[:256])
        note = f"{name}: untrained (calibrated)"
    model.eval()
    return cosyn.lower(model, data.x_test[:8]), data.x_test.numpy(), note


def multipliers(manifest: dict) -> int:
    """Multipliers in the design: the manifest's count, else the dense/conv parallelism."""
    if "multipliers" in manifest:
        return int(manifest["multipliers"])
    kinds = ("dense", "conv2d")
    return sum(int(n["parallelism"]) for n in manifest["nodes"] if n["kind"] in kinds)


def bottleneck(g: Graph, manifest: dict, interval: int) -> float:
    """Utilization of the busiest layer's multipliers: max over dense/conv nodes of
    MACs / (parallelism * interval); 1.0 when the bottleneck layer never idles."""
    kinds = ("dense", "conv2d")
    nodes = [n for n in manifest["nodes"] if n["kind"] in kinds]
    return max((g[n["name"]].macs / (n["parallelism"] * interval) for n in nodes), default=0.0)


def _vs_manifest(value: int | None, expected: int) -> str:
    """A measured figure, starred where it differs from the manifest's."""
    return f"{value}" if value == expected else f"{value}*"


def measure(name: str, g: Graph, x: np.ndarray, p: int | None, sims: list[str], out: Path) -> tuple:
    """One table row: generate with parallelism `p`, simulate on every simulator."""
    d = generate(g, out / f"{name}-p{p or 'default'}", parallelism=p)
    m = d.manifest
    mults = multipliers(m)
    bad, speeds, timing = 0, [], []
    for sim in sims:
        with contextlib.redirect_stdout(io.StringIO()):
            r = simulate(d, x, simulator=sim, backpressure=True, optimize=True)
        bad += r.mismatches + r.lost + r.duplicated + r.protocol_errors
        speeds.append(f"{r.vectors_per_s:.0f}")
        timing.append((r.latency, r.interval))
    lat, ival = timing[0] if len(set(timing)) == 1 else (None, None)  # simulators disagree
    util = f"{100 * g.macs / (mults * ival):.0f}%" if ival and mults else "-"
    busy = f"{100 * bottleneck(g, m, ival):.0f}%" if ival else "-"
    ideal = math.ceil(g.macs / mults) if mults else "-"
    return (name, p or "default", len(x), bad, _vs_manifest(lat, m["latency"]),
            _vs_manifest(ival, m["interval"]), ideal, util, busy, *speeds)  # fmt: skip


def table(rows: list[tuple], sims: list[str]) -> str:
    header = ("model", "parallelism", "vectors", "mismatches", "latency", "interval",
              "ideal", "mult. util.", "busiest layer", *(f"{s} vec/s" for s in sims))  # fmt: skip
    cells = [header] + [tuple(map(str, r)) for r in rows]
    widths = [max(len(c[i]) for c in cells if i < len(c)) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=False))
                     for row in cells)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3, help="training epochs (0: calibrate only)")
    ap.add_argument("--parallelism", default="default,8", help="comma list: default or ints")
    ap.add_argument("--vectors", type=int, default=None, help="first N test vectors (all)")
    ap.add_argument("--sims", default=",".join(SIMS), help="comma list of simulators")
    ap.add_argument("--models", default=",".join(MODELS), help="comma list of models")
    ap.add_argument("--out", type=Path, default=None, help="where to keep the designs")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger().setLevel(logging.ERROR)
    sims = args.sims.split(",")
    ps = [None if p == "default" else int(p) for p in args.parallelism.split(",")]
    out = args.out or Path(tempfile.mkdtemp(prefix="cosyn-bench-rtl-"))
    rows = []
    for name in args.models.split(","):
        g, x, note = trained(name, args.epochs)
        print(note, flush=True)
        for p in ps:
            try:
                rows.append(measure(name, g, x[: args.vectors], p, sims, out))
            except CosynError as e:
                print(f"{name}, parallelism {p or 'default'}: {e}", flush=True)
    print(table(rows, sims))
    print(f"designs in {out}")


if __name__ == "__main__":
    main()
