"""The UART stream bridge: its framing, and bytes on the wire through a small real model
(a Brevitas MLP) in cocotb on Icarus and Verilator, equal to the golden model."""

from __future__ import annotations

import gc
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from amaranth.back import verilog
from cocotb_tools.runner import get_results, get_runner
from cosyn.hw.rtl._verilog import WAIVERS
from cosyn.models import zoo
from cosyn.perfmodel.pipeline import stream_index
from cosyn.sim.runner import simulator_env

from cosyn import fpga, rtl
from cosyn.errors import CosynError
from cosyn.ir import lower

HERE = Path(__file__).parent
DIVISOR = 8  # clock cycles per bit in simulation


@pytest.fixture(scope="module")
def design(tmp_path_factory) -> rtl.Design:
    """A tiny trained-shape MLP (6 inputs, 5 hidden with PolyAct, 3 logits), random weights."""
    torch.manual_seed(0)
    model = zoo.mlp(in_features=6, hidden=(5,), classes=3, act="poly").eval()
    g = lower(model, torch.zeros(1, 6))
    return rtl.generate(g, tmp_path_factory.mktemp("uart") / "rtl")


def _samples(design: rtl.Design, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` random input samples over the input type's range, and the golden outputs, both
    in stream order."""
    g, man = design.graph, design.manifest
    t = g.input.dtype
    x = np.random.default_rng(seed).integers(t.lo, t.hi + 1, (n, *g.input.shape))
    y = g.run_int(x).reshape(n, -1)
    order = stream_index(tuple(man["output"]["shape"]), man["output"]["order"])
    return x.reshape(n, -1), y[:, order]


def test_the_framing_is_little_endian_twos_complement() -> None:
    man = {
        "input": {"tdata_width": 16},
        "output": {"tdata_width": 16, "elements": 2, "signed": True},
    }
    assert fpga.encode(man, np.array([[1, -2], [0x1234, -32768]])) == bytes(
        [0x01, 0x00, 0xFE, 0xFF, 0x34, 0x12, 0x00, 0x80]
    )
    assert fpga.decode(man, bytes([0x01, 0x00, 0xFE, 0xFF])).tolist() == [[1, -2]]
    unsigned = {"output": {"tdata_width": 8, "elements": 1, "signed": False}}
    assert fpga.decode(unsigned, bytes([200, 7])).tolist() == [[200], [7]]
    with pytest.raises(ValueError, match="3 bytes are not whole samples of 2 x 2 bytes"):
        fpga.decode(man, bytes(3))


def test_the_baud_divisor_is_checked() -> None:
    assert fpga.divisor(100.0, 115200) == 868 and fpga.divisor(24.0, 115200) == 208
    with pytest.raises(CosynError, match="3000000 baud is not within 2% of a whole number"):
        fpga.divisor(10.0, 3_000_000)
    with warnings.catch_warnings():  # the refused component is never elaborated
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="Divisor must be at least 4, not 2"):
            fpga.UartRx(2)
        gc.collect()


@pytest.fixture(scope="module")
def bench(design, tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    """The bridge's Verilog beside top.v, a stimulus, and the golden outputs it expects."""
    tmp = tmp_path_factory.mktemp("uart_bench")
    bridge = fpga.UartBridge(design.manifest, DIVISOR)
    (tmp / "uart_top.v").write_text(verilog.convert(bridge, name="cosyn_uart"))
    man = design.manifest
    x1, y1 = _samples(design, 10, seed=1)
    x2, y2 = _samples(design, 4, seed=2)
    stim = {
        "divisor": DIVISOR,
        "first": list(fpga.encode(man, x1)),
        "expect_first": y1.size * man["output"]["tdata_width"] // 8,
        "partial": list(fpga.encode(man, x2[:1]))[:4],  # 4 of a sample's 6 bytes
        "then": list(fpga.encode(man, x2)),
    }
    (tmp / "stimulus.json").write_text(json.dumps(stim))
    return tmp, y1, y2


@pytest.mark.slow
@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_bytes_on_the_wire_come_back_as_the_golden_model(design, bench, simulator, monkeypatch):
    tmp, y1, y2 = bench
    for k, v in simulator_env(simulator).items():
        monkeypatch.setenv(k, v)
    if simulator == "verilator":  # a short run: compile the model unoptimized
        monkeypatch.setenv("MAKEFLAGS", os.environ["MAKEFLAGS"] + " " + " ".join(
            f"{opt}=-O0" for opt in ("OPT_FAST", "OPT_SLOW", "OPT_GLOBAL")))  # fmt: skip
    build = tmp / f"build_{simulator}"
    args = ["-Wno-fatal", str(WAIVERS)] if simulator == "verilator" else ["-g2005"]
    runner = get_runner(simulator)
    runner.build(
        sources=[tmp / "uart_top.v", design.path / "top.v"],
        hdl_toplevel="cosyn_uart",
        build_dir=build,
        build_args=args,
        timescale=("1ns", "1ps"),
        log_file=build / "build.log",
    )
    out = tmp / f"received_{simulator}.bin"
    monkeypatch.syspath_prepend(str(HERE))
    runner.test(
        test_module="uart_bench",
        hdl_toplevel="cosyn_uart",
        build_dir=build,
        test_dir=build,
        extra_env={"COSYN_UART_STIMULUS": str(tmp / "stimulus.json"), "COSYN_UART_OUT": str(out)},
        results_xml=str(build / "results.xml"),
        timescale=("1ns", "1ps"),
    )
    assert get_results(build / "results.xml") == (1, 0)  # (tests, failures)
    got = fpga.decode(design.manifest, out.read_bytes())
    want = np.concatenate([y1, y2])
    assert got.shape == want.shape and np.array_equal(got, want)
