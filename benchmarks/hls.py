"""HLS backend: cosyn's hls4ml projects against hls4ml as it comes (the QONNX route).

For each model and io type: the C simulation of cosyn's project and of hls4ml's own
QONNX conversion, on the digits test set and on random inputs (with exact rounding
ties mixed in), compared with the golden integer model (`g.run`). Prints vectors,
mismatching vectors, hls4ml-as-is max error, and convert + compile seconds.

    .venv/bin/python benchmarks/hls.py [--epochs 5] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import brevitas.nn as qnn
import numpy as np
import torch
from brevitas.quant import Int8ActPerTensorFloat, Int8WeightPerTensorFloat, Uint8ActPerTensorFloat
from cosyn.hw.hls import generate
from cosyn.hw.hls._asis import hls4ml_as_is
from cosyn.models.data import Dataset, digits
from cosyn.models.train import fit
from cosyn.models.zoo import cnn, mlp
from torch import nn

import cosyn


def bn_mlp() -> nn.Module:
    """Float (not power-of-two) scales and a batch norm: threshold-bank requantizers."""
    return nn.Sequential(
        qnn.QuantIdentity(act_quant=Int8ActPerTensorFloat, return_quant_tensor=True),
        qnn.QuantLinear(
            64, 32, bias=True, weight_quant=Int8WeightPerTensorFloat, return_quant_tensor=True
        ),
        nn.BatchNorm1d(32),
        qnn.QuantReLU(act_quant=Uint8ActPerTensorFloat, bit_width=4, return_quant_tensor=True),
        qnn.QuantLinear(32, 10, bias=True, weight_quant=Int8WeightPerTensorFloat),
    )


MODELS: dict[str, tuple[Callable[[], nn.Module], bool]] = {
    "mlp": (mlp, False),
    "cnn": (cnn, True),
    "bn-mlp": (bn_mlp, False),
}


def random_inputs(like: torch.Tensor, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.4, 0.4, like.shape).astype(np.float32)
    ties = rng.random(x.shape) < 0.3
    x[ties] = (rng.integers(0, 256, ties.sum()) + 0.5).astype(np.float32) / 256
    return x


def mismatches(y: np.ndarray, ref: np.ndarray) -> int:
    return int((y.reshape(len(y), -1) != ref.reshape(len(ref), -1)).any(axis=1).sum())


def run(name: str, io_type: str, model: nn.Module, data: Dataset, out: Path) -> list[tuple]:
    g = cosyn.lower(model, data.x_test[:8])
    quiet = contextlib.redirect_stdout(io.StringIO())
    t0 = time.perf_counter()
    with quiet:
        h = generate(g, out / f"{name}-{io_type}", io_type=io_type).compile()
    t1 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        asis = hls4ml_as_is(model, data.x_test[:1], out / f"{name}-{io_type}-asis", io_type)
    t2 = time.perf_counter()
    rows = []
    for inputs, x in (("digits", data.x_test.numpy()), ("random", random_inputs(data.x_test))):
        ref = g.run(x)
        with contextlib.redirect_stdout(io.StringIO()):
            y, ya = h.predict(x), asis.predict(x)
        err = float(np.abs(ya - ref.reshape(len(x), -1)).max())
        rows.append(
            (
                name,
                io_type,
                inputs,
                len(x),
                mismatches(y, ref),
                mismatches(ya, ref),
                err,
                t1 - t0,
                t2 - t1,
            )
        )
    return rows


HEADER = (
    "model",
    "io_type",
    "inputs",
    "vectors",
    "cosyn mism.",
    "as-is mism.",
    "as-is max err",
    "cosyn s",
    "as-is s",
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=5, help="training epochs per model")
    ap.add_argument("--out", type=Path, default=None, help="where to keep the projects")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    out = args.out or Path(tempfile.mkdtemp(prefix="cosyn-bench-hls-"))
    rows = []
    for name, (factory, image) in MODELS.items():
        data = digits(image=image)
        torch.manual_seed(0)
        model = factory()
        acc = fit(model, data, epochs=args.epochs, quiet=True)
        print(f"{name}: trained {args.epochs} epochs, test accuracy {acc:.1f}%", flush=True)
        for io_type in ("io_parallel", "io_stream"):
            rows += run(name, io_type, model.eval(), data, out)
    table = [HEADER] + [
        (*map(str, r[:6]), f"{r[6]:.3g}", f"{r[7]:.1f}", f"{r[8]:.1f}") for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADER))]
    for row in table:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
    print(f"projects in {out}")


if __name__ == "__main__":
    main()
