"""HLS backend: cosyn's hls4ml projects against hls4ml as it comes (the QONNX route).

For each model and io type: the C simulation of cosyn's project and of hls4ml's own
QONNX conversion, on the digits test set and on random inputs (with exact rounding
ties mixed in), compared with the golden integer model (`g.run`). Prints vectors,
mismatching vectors, hls4ml-as-is max error, and convert + compile seconds. The
PolyAct models (mlp-poly, cnn-poly) show "n/a" for hls4ml as-is: its QONNX export
fails on PolyAct (the failure is printed), so hls4ml's route does not reach them.

    .venv/bin/python benchmarks/hls.py [--epochs 5] [--out DIR] [--models mlp-poly ...]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import io
import logging
import re
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
from cosyn.hw.hls._asis import AsIs, hls4ml_as_is
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
    "mlp-poly": (functools.partial(mlp, act="poly"), False),
    "cnn-poly": (functools.partial(cnn, act="poly"), True),
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
    asis = as_is(model, data, out / f"{name}-{io_type}-asis", io_type)
    t2 = time.perf_counter()
    rows = []
    for inputs, x in (("digits", data.x_test.numpy()), ("random", random_inputs(data.x_test))):
        ref = g.run(x)
        with contextlib.redirect_stdout(io.StringIO()):
            y = h.predict(x)
            ya = None if asis is None else asis.predict(x)
        err = None if ya is None else float(np.abs(ya - ref.reshape(len(x), -1)).max())
        fails = None if ya is None else mismatches(ya, ref)
        asis_s = None if asis is None else t2 - t1
        rows.append(
            (name, io_type, inputs, len(x), mismatches(y, ref), fails, err, t1 - t0, asis_s)
        )
    return rows


def as_is(model: nn.Module, data: Dataset, out: Path, io_type: str) -> AsIs | None:
    """hls4ml's own QONNX route, or None (said on stdout) where it fails (PolyAct).

    It exports a copy: a failed Brevitas export leaves the model in export mode.
    """
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return hls4ml_as_is(copy.deepcopy(model), data.x_test[:1], out, io_type)
    except Exception as e:
        line = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip().splitlines()
        print(f"  hls4ml as-is fails: {type(e).__name__}: {line[0] if line else ''}", flush=True)
        return None


def cell(v: object, fmt: str = "") -> str:
    return "n/a" if v is None else format(v, fmt)


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
    ap.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    out = args.out or Path(tempfile.mkdtemp(prefix="cosyn-bench-hls-"))
    rows = []
    for name in args.models:
        factory, image = MODELS[name]
        data = digits(image=image)
        torch.manual_seed(0)
        model = factory()
        acc = fit(model, data, epochs=args.epochs, quiet=True)
        print(f"{name}: trained {args.epochs} epochs, test accuracy {acc:.1f}%", flush=True)
        for io_type in ("io_parallel", "io_stream"):
            rows += run(name, io_type, model.eval(), data, out)
    table = [HEADER] + [
        (*map(cell, r[:6]), cell(r[6], ".3g"), cell(r[7], ".1f"), cell(r[8], ".1f")) for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADER))]
    for row in table:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
    print(f"projects in {out}")


if __name__ == "__main__":
    main()
