"""The command line: `cosyn demo`, `cosyn train`, `cosyn build`."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer
from rich.console import Console
from torch import nn

from cosyn.config import DEFAULT_MODEL, load_model, parse_shape
from cosyn.errors import CosynError, ModelFileError
from cosyn.hw import hls
from cosyn.ir import Graph, lower
from cosyn.models import data, fit, zoo
from cosyn.models.train import predict
from cosyn.report import atomic_dir, graph_table

app = typer.Typer(
    pretty_exceptions_enable=False,
    add_completion=False,
    no_args_is_help=True,
    help="cosyn: hardware/model co-design for FPGAs.",
)
console = Console()


def _is_image(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def check_exact(model: nn.Module, g: Graph, x: torch.Tensor) -> int:
    """Number of output elements where the golden model differs from the model."""
    return int(np.count_nonzero(predict(model, x).numpy() != g.run(x.numpy())))


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="output folder")] = Path("out/demo"),
    epochs: Annotated[int, typer.Option(help="training epochs")] = 30,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
) -> None:
    """Train the default MLP on digits, lower it, and check the golden model bit-exact."""
    d = data.digits()
    torch.manual_seed(seed)
    model = zoo.mlp()
    t0 = time.perf_counter()
    acc = fit(model, d, epochs=epochs, seed=seed)
    console.print(
        f"trained default MLP (4-bit weights, 8-bit activations) in "
        f"{time.perf_counter() - t0:.1f} s: test accuracy {acc:.2f}%"
    )
    g = lower(model, d.x_test[:1])
    bad = check_exact(model, g, d.x_test)
    console.print(
        f"golden model vs Brevitas on {len(d.x_test)} test vectors: "
        f"{bad} mismatching outputs" + (" (bit-exact)" if bad == 0 else "")
    )
    with atomic_dir(out) as tmp:
        (tmp / "graph.md").write_text(graph_table(g))
        t0 = time.perf_counter()
        h = hls.generate(g, tmp / "hls")
        hls_bad = int(np.count_nonzero(h.predict(d.x_test.numpy()) != g.run(d.x_test.numpy())))
        console.print(
            f"HLS C simulation vs golden model on {len(d.x_test)} test vectors: "
            f"{hls_bad} mismatching outputs ({time.perf_counter() - t0:.1f} s)"
        )
    console.print(f"wrote {out / 'graph.md'} and the hls4ml project {out / 'hls'}")
    if bad or hls_bad:
        raise typer.Exit(1)


@app.command()
def train(
    model: Annotated[str, typer.Argument(help="package.module:factory")] = DEFAULT_MODEL,
    out: Annotated[Path, typer.Option(help="checkpoint to write")] = Path("out/train/model.pt"),
    epochs: Annotated[int, typer.Option(help="training epochs")] = 30,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
) -> None:
    """Train a model on the digits data set and save its state_dict."""
    net = load_model(model)
    acc = fit(net, data.digits(image=_is_image(net)), epochs=epochs, seed=seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    torch.save(net.state_dict(), tmp)
    tmp.rename(out)
    console.print(f"test accuracy {acc:.2f}%; wrote {out}")


@app.command()
def build(
    model: Annotated[str, typer.Argument(help="package.module:factory")],
    checkpoint: Annotated[Path | None, typer.Option(help="state_dict to load")] = None,
    out: Annotated[Path, typer.Option(help="output folder")] = Path("out/build"),
    input_shape: Annotated[
        str | None, typer.Option(help="shape of one sample, e.g. 64 or 1,8,8 (default: digits)")
    ] = None,
    backend: Annotated[str, typer.Option(help="hardware to write: hls")] = "hls",
    board: Annotated[str | None, typer.Option(help="board preset, e.g. pynq-z2")] = None,
    part: Annotated[str | None, typer.Option(help="FPGA part (default xc7z020clg400-1)")] = None,
) -> None:
    """Lower a model to the integer graph; write its description and the hardware project."""
    if backend != "hls":
        raise CosynError(f"backend {backend!r}: the known backends are: hls")
    if model.endswith(".onnx"):
        raise ModelFileError(f"{model}: QONNX input is not available yet; name a factory")
    net = load_model(model, checkpoint)
    shape = parse_shape(input_shape) if input_shape else (1, 8, 8) if _is_image(net) else (64,)
    g = lower(net, torch.zeros((1, *shape)))
    with atomic_dir(out) as tmp:
        (tmp / "graph.md").write_text(graph_table(g))
        hls.generate(g, tmp / "hls", part=part, board=board)
    console.print(
        f"lowered {model}: {len(g)} nodes, {g.macs} MACs per sample; wrote {out / 'graph.md'} "
        f"and the hls4ml project {out / 'hls'}"
    )


def main() -> None:
    """Entry point: a CosynError becomes one line on stderr and exit status 2."""
    try:
        app()
    except CosynError as e:
        print(f"cosyn: error: {e}", file=sys.stderr)
        sys.exit(2)
