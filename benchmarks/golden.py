"""Golden model vs Brevitas: vectors checked, mismatches, lowering time, run time per vector.

Run: make bench  (or .venv/bin/python benchmarks/golden.py). Seeds are fixed (0).
The "float scales" rows use Brevitas' default learned float scales, where the model's
own float32 accumulation is inexact: the integer graph agrees except where a value
lands within rounding error of a quantization boundary.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from cosyn.models import data, fit, zoo
from cosyn.models.train import predict

import cosyn


def measure(name: str, model: torch.nn.Module, x: torch.Tensor) -> tuple:
    t0 = time.perf_counter()
    g = cosyn.lower(model, x[:1])
    t_lower = time.perf_counter() - t0
    want = predict(model, x).numpy()
    t0 = time.perf_counter()
    got = g.run(x.numpy())
    t_run = (time.perf_counter() - t0) / len(x)
    return name, len(x), int(np.count_nonzero((got != want).any(axis=1))), t_lower, t_run


def hypothesis_models(scales: str, count: int) -> list[tuple[torch.nn.Module, torch.Tensor]]:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from strategies import inputs, mlps

    found = []

    @settings(
        max_examples=count,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        derandomize=True,
    )
    @given(st.data())
    def collect(d):
        m = d.draw(mlps(scales))
        found.append((m, d.draw(inputs((m[1].in_features,), 256))))

    collect()
    return found


def main() -> None:
    rows = []
    for name, factory, image in (("mlp (digits)", zoo.mlp, False), ("cnn (digits)", zoo.cnn, True)):
        d = data.digits(image=image)
        model = factory()
        fit(model, d, epochs=30, seed=0, quiet=True)
        rows.append(measure(name, model, d.x_test))
    for scales in ("pow2", "short", "float"):
        found = hypothesis_models(scales, 50)
        results = [measure("", m, x) for m, x in found]
        rows.append(
            (
                f"{len(found)} random MLPs, {scales} scales + BN",
                sum(r[1] for r in results),
                sum(r[2] for r in results),
                float(np.mean([r[3] for r in results])),
                float(np.mean([r[4] for r in results])),
            )
        )
    table = Table(title="golden model vs Brevitas (bit-exact float32 comparison)")
    for col in ("model", "vectors", "mismatching vectors", "lowering (s)", "golden run / vector"):
        table.add_column(col, justify="right" if col != "model" else "left")
    for name, n, bad, tl, tr in rows:
        table.add_row(name, str(n), str(bad), f"{tl:.3f}", f"{tr * 1e6:.1f} us")
    Console().print(table)


if __name__ == "__main__":
    main()
