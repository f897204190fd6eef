"""FINN's example networks (brevitas_examples.bnn_pynq) and cosyn's zoo, end to end.

For each network: its graph's nodes and MACs per sample; golden mismatches (vectors on
which `g.run` differs from the Brevitas model, float32 outputs compared exactly); RTL
mismatches (the design simulated in cocotb on Verilator with back-pressure, every output
element against the golden model; wrong, lost and duplicated elements and protocol
errors), where the simulation fits in minutes, else why not; HLS C-simulation mismatches
(hls4ml; io_stream for convolutional networks, else io_parallel) likewise; latency and
interval in cycles (the manifest's, from `cosyn.perfmodel.pipeline.plan`, as
`cosyn.rtl.generate` writes it; a `*` where a simulation measured otherwise), at the
parallelism rule (one multiplier per output up to 64, `parallelism="rule"`: the figures
stay those of one design whatever device would take the allocation); throughput
at 100 MHz (100e6 / interval); and FINN's published figure where there is one, with its
source.

The networks are untrained: random initialisation, batch norms and TensorNorms calibrated
on one batch, then every gamma drawn at random (some negative), as tests/test_bnn_pynq.py
does. Exactness does not need training. Inputs: scikit-learn's digits, resized to 28x28
(TFC, SFC, LFC) or 32x32x3 (CNV) by `cosyn.models.data.digits`.

Verilator builds are kept under `$COSYN_CACHE/zoo` (default ~/.cache/cosyn/zoo), keyed by
the Verilog's hash, so a rerun costs the lowering, generation and simulation only.

    .venv/bin/python benchmarks/zoo.py [--networks tfc_1w1a,cnv_2w2a] [--vectors 4]
        [--golden 360] [--rtl tfc_1w1a,...|all|none] [--hls ...|all|none]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from brevitas_examples.bnn_pynq.models import model_with_cfg
from brevitas_examples.bnn_pynq.models.tensor_norm import TensorNorm
from cosyn.hw.hls import generate as hls_generate
from cosyn.hw.rtl import generate
from cosyn.models.data import Dataset, digits
from cosyn.models.train import predict
from cosyn.models.zoo import cnn, mlp
from cosyn.perfmodel.pipeline import plan
from cosyn.sim import run_testbench, write_testbench
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from torch import nn

import cosyn
from cosyn.ir.graph import Graph

FINN_NETS = ["tfc_1w1a", "tfc_1w2a", "tfc_2w2a", "sfc_1w1a", "sfc_1w2a", "sfc_2w2a",
             "lfc_1w1a", "lfc_1w2a", "cnv_1w1a", "cnv_1w2a", "cnv_2w2a"]  # fmt: skip
ZOO = {"mlp": mlp, "cnn": cnn}
NETWORKS = [*FINN_NETS, *ZOO]

# Simulated by default: the designs whose Verilator build and hls4ml compile take minutes
# here (2 shared cores). The others run with --rtl/--hls NAME; why they do not by default,
# measured here, is printed below the table (and in the README).
RTL = {"tfc_1w1a", "tfc_1w2a", "tfc_2w2a", "mlp", "cnn"}
HLS = {"tfc_1w1a", "tfc_1w2a", "tfc_2w2a", "mlp", "cnn"}
NOT_RUN = {"sfc": "(note a)", "lfc": "(note b)", "cnv": "(note c)"}
NOTES = [
    "(a) SFC: 0.33 M weights, its top.v 1.5 MB (TFC's 0.86 MB builds in 3 min on idle cores).",
    "(b) LFC: 2.9 M weights, twice CNV-w2a2's.",
    "(c) CNV-w2a2 (1.5 M weights), measured on 2 cores shared with other jobs (load 5 to 9): "
    "top.v 7 MB; Verilator writes 45 MB of C++ in 1.5 min, g++ compiles it in 24 min "
    "(at most 0.95 GB per process); 2 random images at full rate (1.9 M cycles) simulate in "
    "66 min, exact, latency 490,696 and interval 453,696 as the manifest then (451,584 "
    "since spare line-buffer rows). hls4ml io_stream: "
    "written in 68 s, compiled in 405 s, C simulation 90 s per image, exact on 2 images.",
]
IO_TYPE = {"cnn": "io_stream", "cnv": "io_stream"}  # convolutions stream; the rest is parallel

CLOCK_HZ = 100e6
TFC_NB = ("https://github.com/Xilinx/finn/blob/365a5781926a5b0424c2af81dc714735b9bbc42b/"
          "notebooks/end2end_example/bnn-pynq/tfc_end2end_example.ipynb")  # fmt: skip
EXAMPLES = ("https://github.com/Xilinx/finn-examples/blob/116220c803eb4acd5a33f5fc1fb719ce81319115/"
            "finn_examples/notebooks/")  # fmt: skip
BNN_PYNQ = ("https://github.com/Xilinx/BNN-PYNQ/blob/d39c1c75403db571f54dd0f0cf27ae5104ac968e/"
            "notebooks/CNV-QNN_Cifar10_Testset.ipynb")  # fmt: skip
# FINN's published throughput (images/s), each with [its source] below.
FINN = {
    "tfc_1w1a": "958,413 meas., 1,562,500 ideal (II 64) [1]; 837,019 [2]",
    "cnv_1w1a": "3,020 [3]; 9,150 [4]",
    "cnv_1w2a": "9,150 [4]",
    "cnv_2w2a": "2,580 [4]",
}
SOURCES = [
    f"[1] FINN's TFC-w1a1 end-to-end notebook, Pynq-Z1 at 100 MHz, 10,000 images, "
    f"throughput_test (output cells before they were cleared): {TFC_NB}",
    f"[2] finn-examples tfc_w1a1_mnist, throughput_test at 99.999 MHz, batch 1000: "
    f"{EXAMPLES}0_mnist_with_fc_networks.ipynb",
    f"[3] finn-examples cnv_w1a1_cifar10, throughput_test at 99.999 MHz, batch 1000 "
    f"(2,995 including data movement): {EXAMPLES}1_cifar10_with_cnv_networks.ipynb",
    f"[4] BNN-PYNQ (FINN's first HLS overlays), CNV W1A1/W1A2/W2A2 on the 10,000 CIFAR-10 "
    f"test images: {BNN_PYNQ}",
]


@dataclass
class Row:
    name: str
    nodes: int
    macs: int
    golden: str
    rtl: str
    hls: str
    latency: str
    interval: str
    throughput: str
    seconds: float


def cache_dir() -> Path:
    """Where Verilator builds are kept: `$COSYN_CACHE/zoo`, by default ~/.cache/cosyn/zoo."""
    return Path(os.environ.get("COSYN_CACHE") or Path.home() / ".cache" / "cosyn") / "zoo"


def data_for(name: str) -> Dataset:
    """The digits as the network takes them: 28x28 (FC), 32x32x3 (CNV), the zoo's own."""
    if name in ZOO:
        return digits(image=name == "cnn")
    return digits(image=True, size=32, channels=3) if name[:3] == "cnv" else digits(True, 28)


def calibrated(name: str, x: torch.Tensor, seed: int = 0) -> nn.Module:
    """The untrained network `name`, its quantizers and normalisations calibrated on `x`
    (one batch's statistics); in FINN's networks every gamma and TensorNorm weight is then
    drawn at random (some negative: decreasing thresholds), as tests/test_bnn_pynq.py does."""
    torch.manual_seed(seed)
    model = ZOO[name]() if name in ZOO else model_with_cfg(name, pretrained=False)[0]
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d)]
    norms += [m for m in model.modules() if isinstance(m, TensorNorm)]
    for m in norms:
        m.momentum = 1.0 if isinstance(m, TensorNorm) else None
    model.train()
    with torch.no_grad():
        model(x)
        g = torch.Generator().manual_seed(seed)
        for m in norms if name not in ZOO else []:
            m.weight.copy_(torch.randn(m.weight.shape, generator=g))
            m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
    return model.eval()


def golden_mismatches(model: nn.Module, g: Graph, x: torch.Tensor) -> int:
    """Vectors on which the golden model's float32 output differs from the model's."""
    y, yg = predict(model, x).numpy(), g.run(x.numpy())
    return int((y.reshape(len(x), -1) != yg.reshape(len(x), -1)).any(axis=1).sum())


def simulate_rtl(name: str, g: Graph, x: np.ndarray, tmp: Path) -> tuple[str, tuple | None]:
    """Generate, then Verilator with back-pressure on `x`: a mismatch cell, and the
    simulated (latency, interval) with the manifest's."""
    d = generate(g, tmp / name / "rtl", "rule")
    build = cache_dir() / name / "verilator"
    tb = write_testbench(d, tmp / name / "tb", x, backpressure=True)
    with contextlib.redirect_stdout(io.StringIO()):
        r = run_testbench(tb, d.path, "verilator", build)
    bad = r.mismatches + r.lost + r.duplicated + r.protocol_errors
    m = d.manifest
    return f"{bad} of {r.vectors}", ((r.latency, r.interval), (m["latency"], m["interval"]))


def simulate_hls(name: str, g: Graph, x: np.ndarray, tmp: Path) -> str:
    """hls4ml C simulation of `x` (io_stream for convolutional networks, else io_parallel):
    vectors differing from the golden model."""
    io_type = IO_TYPE.get(name[:3], "io_parallel")
    with contextlib.redirect_stdout(io.StringIO()):
        h = hls_generate(g, tmp / name / "hls", io_type=io_type).compile()
        xi = g.quantize(x)
        y = h.predict_int(xi)
    ref = g.run_int(xi)
    bad = int((y.reshape(len(x), -1) != ref.reshape(len(x), -1)).any(axis=1).sum())
    return f"{bad} of {len(x)}"


def _timed(value: int, measured: int | None) -> str:
    return f"{value:,}" if measured in (None, value) else f"{value:,}* ({measured:,} sim.)"


def measure(name: str, args: argparse.Namespace, tmp: Path) -> Row:
    t0 = time.perf_counter()
    data = data_for(name)
    model = calibrated(name, data.x_train[:512])
    x = data.x_test[: args.golden]
    g = cosyn.lower(model, x[:2])
    golden = f"{golden_mismatches(model, g, x)} of {len(x)}"
    p = plan(g)
    why = NOT_RUN.get(name[:3], "(--rtl, --hls run it)")
    rtl, sim, hls = f"not simulated {why}", None, f"not run {why}"
    if name in args.rtl:
        rtl, sim = simulate_rtl(name, g, x[: args.vectors].numpy(), tmp)
        assert sim[1] == (p.latency, p.interval), (name, sim, p.latency, p.interval)
    if name in args.hls:
        hls = simulate_hls(name, g, x[: args.vectors].numpy(), tmp)
    lat, ival = sim[0] if sim else (None, None)
    return Row(name, len(g), g.macs, golden, rtl, hls, _timed(p.latency, lat),
               _timed(p.interval, ival), f"{CLOCK_HZ / p.interval:,.0f}",
               time.perf_counter() - t0)  # fmt: skip


def table(rows: list[Row], args: argparse.Namespace) -> Table:
    caption = (
        "Untrained networks (random initialisation, normalisations calibrated on one batch, "
        "random gammas): exactness does not need training. Golden: the graph's float32 "
        f"output vs Brevitas' on the first {args.golden} digits test images. RTL: Verilator "
        f"with back-pressure on the first {args.vectors}; HLS: hls4ml C simulation "
        "(io_stream for convolutional networks, else io_parallel), same vectors. Latency and "
        "interval: the manifest's (perfmodel), equal to simulation where simulated. "
        "Throughput at 100 MHz = 100e6 / interval."
    )
    t = Table(title="FINN's example networks and cosyn's zoo", caption=caption)
    cols = ("network", "nodes", "MACs/sample", "golden mism.", "RTL mism.", "HLS C-sim mism.",
            "latency", "interval", "images/s @100 MHz", "FINN images/s", "s")  # fmt: skip
    for c in cols:
        t.add_column(c, justify="left" if c in ("network", "RTL mism.", "HLS C-sim mism.",
                                                "FINN images/s") else "right")  # fmt: skip
    for r in rows:
        finn = escape(FINN.get(r.name, "-"))
        t.add_row(r.name, str(r.nodes), f"{r.macs:,}", r.golden, r.rtl, r.hls, r.latency,
                  r.interval, r.throughput, finn, f"{r.seconds:.0f}")  # fmt: skip
    return t


def _names(value: str, default: set[str]) -> set[str]:
    return (
        set(NETWORKS)
        if value == "all"
        else set()
        if value == "none"
        else (default if value == "default" else set(value.split(",")))
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", default=",".join(NETWORKS), help="comma list")
    ap.add_argument("--golden", type=int, default=360, help="vectors for the golden check")
    ap.add_argument("--vectors", type=int, default=4, help="vectors for RTL and HLS")
    ap.add_argument("--rtl", default="default", help="networks to simulate: list, all, none")
    ap.add_argument("--hls", default="default", help="networks to C-simulate: list, all, none")
    args = ap.parse_args()
    args.rtl, args.hls = _names(args.rtl, RTL), _names(args.hls, HLS)
    warnings.filterwarnings("ignore")
    logging.getLogger().setLevel(logging.ERROR)
    console = Console(width=200)
    rows = []
    with tempfile.TemporaryDirectory(prefix="cosyn-bench-zoo-") as tmp:
        for name in args.networks.split(","):
            rows.append(measure(name, args, Path(tmp)))
            r = rows[-1]
            console.print(f"{name}: golden {r.golden}, RTL {r.rtl}, HLS {r.hls}, interval "
                          f"{r.interval} ({r.seconds:.0f} s)", highlight=False)  # fmt: skip
    console.print(table(rows, args))
    for line in (*NOTES, *SOURCES):
        console.print(line, highlight=False, soft_wrap=True, markup=False)


if __name__ == "__main__":
    main()
