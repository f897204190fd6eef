"""Write an hls4ml project for an integer graph, and C-simulate it."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from cosyn.hw.hls import _layers
from cosyn.hw.hls._boards import PART_DSPS, resolve
from cosyn.hw.hls._convert import Tensor, convert, hls_name
from cosyn.hw.hls._readme import readme
from cosyn.perfmodel.hls import estimate_hls
from cosyn.scheduler.parallelism import allocate_reuse

from cosyn.errors import CosynError
from cosyn.ir.graph import Graph

__all__ = ["HLSProject", "generate"]

IO_TYPES = ("io_parallel", "io_stream")
HLS_BACKENDS = ("Vitis", "Vivado")
PROJECT_NAME = "myproject"


@dataclass
class HLSProject:
    """A written hls4ml project for `graph`; `hls_model` is hls4ml's ModelGraph.

    The hardware takes the graph's input integers (channels last for images) and
    returns the output node's integers; `predict_int` and `predict` do the layout and
    (de)quantization, so they equal `graph.run_int` and `graph.run` exactly.
    """

    path: Path
    graph: Graph
    hls_model: Any
    part: str
    clock_ns: float
    io_type: str
    backend: str
    output: Tensor
    reuse_factors: dict[str, int]  # per dense/conv node, as hls4ml applies them
    compiled: bool = field(default=False)

    def compile(self) -> HLSProject:
        """Build the C simulation library with g++ (no vendor tool needed)."""
        if not self.compiled:
            self.hls_model.compile()
            self.compiled = True
        return self

    def predict_int(self, xi: np.ndarray) -> np.ndarray:
        """C simulation: integer inputs (batch first, graph layout) to int64 outputs."""
        xi = np.asarray(xi)
        if xi.shape[1:] != self.graph.input.shape:
            raise ValueError(
                f"Input shape must be (batch, *{self.graph.input.shape}), not {xi.shape}"
            )
        self.compile()
        n = xi.shape[0]
        if xi.ndim == 4:
            xi = xi.transpose(0, 2, 3, 1)
        y = np.asarray(self.hls_model.predict(np.ascontiguousarray(xi, dtype=np.float64)))
        y = y.reshape(n, -1)
        out = self.output
        if len(out.shape) == 3:
            h, w, c = out.shape
            y = y.reshape(n, h, w, c).transpose(0, 3, 1, 2)
        elif out.perm is not None:
            z = np.empty_like(y)
            z[:, out.perm] = y
            y = z
        yi = y.astype(np.int64)
        if not np.array_equal(yi, y):
            raise AssertionError("C simulation returned a non-integer value")
        return yi

    def predict(self, x: np.ndarray) -> np.ndarray:
        """C simulation from float32 inputs to float32 outputs, as `graph.run`."""
        return self.graph.dequantize(self.predict_int(self.graph.quantize(x)))


def _graph(g_or_model: Any, example_input: Any) -> Graph:
    if isinstance(g_or_model, Graph):
        return g_or_model
    if example_input is None:
        raise CosynError(
            f"{type(g_or_model).__name__}: generating HLS from a model needs example_input "
            "(a float batch), or pass a graph from cosyn.lower"
        )
    from cosyn.ir import lower

    return lower(g_or_model, example_input)


def _check(io_type: str, backend: str) -> None:
    if io_type not in IO_TYPES:
        raise CosynError(f"io_type must be one of {', '.join(IO_TYPES)}, not {io_type!r}")
    if backend not in HLS_BACKENDS:
        raise CosynError(f"backend must be one of {', '.join(HLS_BACKENDS)}, not {backend!r}")


def reuse_factors(
    g: Graph, part: str, reuse_factor: int | dict[str, int] | None, io_type: str
) -> dict[str, int]:
    """Each dense/conv node's reuse factor as hls4ml applies it: `reuse_factor` for every
    one, or per node (the others 1), or by default (None) allocated to the part's DSP
    slices (`cosyn.scheduler.allocate_reuse`)."""
    if reuse_factor is None:
        reuse_factor = allocate_reuse(g, PART_DSPS[part])
    return {x.name: x.reuse_factor for x in estimate_hls(g, reuse_factor, io_type)}


def hls_config(
    g: Graph,
    out_dir: Path,
    part: str,
    clock_ns: float,
    io_type: str,
    backend: str,
    reuse: dict[str, int],
) -> tuple[dict[str, Any], list[dict[str, Any]], Tensor]:
    """hls4ml's configuration and layer list for `g`: every precision from the graph,
    each dense/conv layer's reuse factor from `reuse` (R > 1: the Resource strategy)."""
    import hls4ml

    layers, precision, out = convert(g, io_type)
    config = hls4ml.backends.get_backend(backend).create_initial_config(
        part=part, clock_period=clock_ns, io_type=io_type
    )
    config.update(OutputDir=str(out_dir), ProjectName=PROJECT_NAME, Backend=backend)
    per_layer = {name: {"Precision": p} for name, p in precision.items()}
    for node, r in reuse.items():
        per_layer[hls_name(node)].update(
            ReuseFactor=r, Strategy="Latency" if r == 1 else "Resource"
        )
    config["HLSConfig"] = {
        # Every layer's precisions are set below; this default is never used.
        "Model": {"Precision": "ap_int<16>", "ReuseFactor": 1, "Strategy": "Latency"},
        "LayerName": per_layer,
    }
    return config, layers, out


def generate(
    g_or_model: Any,
    out_dir: str | Path,
    part: str | None = None,
    clock_ns: float | None = None,
    io_type: str = "io_parallel",
    reuse_factor: int | dict[str, int] | None = None,
    backend: str = "Vitis",
    board: str | None = None,
    example_input: Any = None,
) -> HLSProject:
    """Write an hls4ml project for an integer graph (or a Brevitas model, lowered first).

    The project's C simulation (`compile()`, `predict_int()`) is bit-exact with the
    graph's golden model. `board` ('pynq-z2', 'alveo-u250', ...) sets part and clock;
    the default part is xc7z020clg400-1 at 10 ns. `reuse_factor`: one for every
    dense/conv layer, one per node name (the others 1), or None (the default) to
    allocate them: the smallest interval whose multipliers, as hls4ml counts them, fit
    the part's DSP slices (`cosyn.scheduler.allocate_reuse`). The project is written to a
    temporary folder and moved to `out_dir` (replacing it) once complete.
    """
    from hls4ml.model.graph import ModelGraph

    part, clock_ns = resolve(part, board, clock_ns)
    _check(io_type, backend)
    g = _graph(g_or_model, example_input)
    reuse = reuse_factors(g, part, reuse_factor, io_type)
    _layers.register()
    out_dir = Path(out_dir).absolute()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        config, layers, out = hls_config(g, tmp, part, clock_ns, io_type, backend, reuse)
        hls_model = ModelGraph.from_layer_list(config, layers)
        hls_model.write()
        (tmp / "README.md").write_text(readme(g, part, clock_ns, io_type, backend, reuse))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    hls_model.config.config["OutputDir"] = str(out_dir)
    return HLSProject(out_dir, g, hls_model, part, clock_ns, io_type, backend, out, reuse)
