"""The open synthesis flow: yosys and nextpnr on one small design (ECP5 and iCE40 placed
and routed, 7-series counted), the cache, the errors a user can cause, `cosyn synth`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cosyn.hw.fpga._flow import sources
from cosyn.hw.fpga._outreg import absorb_output_registers
from cosyn.perfmodel.devices import UnknownDeviceError

from cosyn import fpga, rtl
from cosyn.cli import main
from cosyn.errors import CosynError
from cosyn.ir import Dense, Graph, IntType, Quantize, Shift

ONE = np.ones(1, np.float32)


def small_graph() -> Graph:
    """Quantize (4 int8) -> Dense (3 outputs, 4-bit weights) -> Shift to int8."""
    x = Quantize("x", (), (4,), IntType(8, True), ONE)
    w = np.array([[3, -2, 1, 5], [-4, 7, 0, 2], [1, 1, -8, 3]])
    d = Dense.sized(
        [(np.array([-128]), np.array([127]))],
        name="d",
        inputs=("x",),
        shape=(3,),
        scale=ONE,
        weight=w,
        bias=np.array([10, -3, 0]),
    )
    s = Shift("s", ("d",), (3,), IntType(8, True), ONE, shift=np.array([4]), lo=np.array([-128]),
              hi=np.array([127]))  # fmt: skip
    return Graph([x, d, s])


@pytest.fixture(scope="module")
def design(tmp_path_factory) -> rtl.Design:
    return rtl.generate(small_graph(), tmp_path_factory.mktemp("small") / "rtl")


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("COSYN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "synth"


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run `cosyn ARGS` in this process (as `main` does: a CosynError exits 2); returns
    (exit status, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["cosyn", *args])
        with pytest.raises(SystemExit) as e:
            main()
        out = capsys.readouterr()
        return e.value.code or 0, out.out, out.err

    return run


@pytest.mark.slow
def test_ecp5_placed_and_routed_cached_and_reported_by_the_cli(design, cache, tmp_path, cli):
    t0 = time.perf_counter()
    r = fpga.synthesize(design, "ecp5-25f", progress=False)
    first = time.perf_counter() - t0
    assert r.device == "ecp5-25f" and not r.cached
    assert r.lut > 0 and r.ff > 0 and r.carry == r.cells["CCU2C"] > 0
    assert r.lut == r.cells["LUT4"] + 2 * r.carry + r.lutram
    assert r.dsp == r.cells.get("MULT18X18D", 0)
    assert r.bram == 0 and r.fits and r.over() == {}
    assert r.fmax_mhz is not None and r.fmax_mhz > 0 and r.target_mhz == fpga.DEFAULT_FREQ_MHZ
    p = r.critical_path
    assert p is not None and p.start and p.end
    assert p.delay_ns == pytest.approx(1e3 / r.fmax_mhz, rel=0.02)
    assert p.delay_ns == pytest.approx(p.logic_ns + p.routing_ns)
    assert r.interval == design.manifest["interval"]
    assert r.inferences_per_s == pytest.approx(r.fmax_mhz * 1e6 / r.interval)
    assert fpga.SynthResult.from_json(r.to_json()) == r
    assert r.pnr_s is not None and r.yosys_s > 0

    t0 = time.perf_counter()
    again = fpga.synthesize(design.path, "ecp5-25f", progress=False)
    assert time.perf_counter() - t0 < min(1.0, first / 4)
    assert again.cached and again == r
    assert [f.suffix for f in cache.iterdir()] == [".json"]

    out = tmp_path / "report" / "r.json"  # the CLI finds the cached result too
    rc, stdout, stderr = cli(
        "synth", str(design.path.parent), "--device", "ecp5-25f", "--out", str(out)
    )
    assert rc == 0, stderr
    assert "inferences/s" in stdout and "(cached)" in stdout and "MULT" not in stdout
    assert fpga.SynthResult.from_json(out.read_text()) == r


@pytest.mark.slow
def test_ice40_placed_and_routed(design, cache) -> None:
    r = fpga.synthesize(design, "ice40-up5k", progress=False)
    assert r.lut == r.cells["SB_LUT4"] > 0 and r.carry > 0
    assert r.ff == sum(n for c, n in r.cells.items() if c.startswith("SB_DFF")) > 0
    assert r.dsp == r.cells.get("SB_MAC16", 0)
    assert r.fmax_mhz is not None and r.fmax_mhz > 0 and r.critical_path is not None


@pytest.mark.slow
def test_xc7_counts_without_place_and_route(design, cache) -> None:
    r = fpga.synthesize(design, "xc7z020", progress=False)
    assert r.lut > 0 and r.ff > 0 and r.carry == r.cells["CARRY4"] > 0
    assert r.dsp == r.cells.get("DSP48E1", 0)
    assert r.fmax_mhz is None and r.critical_path is None and r.pnr_s is None
    assert "no open place and route" in str(r.table().caption)


@pytest.mark.slow
def test_a_yosys_failure_names_the_file_and_shows_its_lines(design, tmp_path, cache, cli):
    bad = tmp_path / "bad.v"
    bad.write_text("module cosyn_top(input clk, output reg q);\nalways @(posedge clk) q <= ~q\n")
    with pytest.raises(fpga.SynthesisError) as e:
        fpga.synthesize(bad, "ecp5-25f", progress=False)
    msg = str(e.value)
    assert msg.startswith(f"yosys failed on {bad}") and "bad.v:" in msg and "ERROR" in msg
    assert len(msg.splitlines()) <= 11
    assert not cache.exists() or not any(cache.iterdir())  # nothing cached, nothing half-written
    (tmp_path / "manifest.json").write_text(json.dumps(design.manifest))  # for --board
    for args in (["--device", "ecp5-25f"], ["--board", "ulx3s-25f"]):
        rc, _, stderr = cli("synth", str(bad), *args)
        assert rc == 2 and f"yosys failed on {bad}" in stderr and "ERROR" in stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.v", "manifest.json"]


def test_unknown_device_lists_the_known(design) -> None:
    with pytest.raises(UnknownDeviceError, match=r"'ecp5-99f'; known devices: ecp5-25f, .*xc7z020"):
        fpga.synthesize(design, "ecp5-99f", progress=False)


def test_cli_bad_device_is_one_line_and_exit_2(design, tmp_path, cli) -> None:
    out = tmp_path / "r.json"
    rc, _, stderr = cli("synth", str(design.path), "--device", "nope", "--out", str(out))
    assert rc == 2 and stderr.count("\n") == 1
    assert "unknown device 'nope'; known devices: ecp5-25f" in stderr and not out.exists()


def test_a_design_is_found_in_a_build_folder_with_its_interval(design, tmp_path) -> None:
    for where in (design, design.path, design.path.parent, design.path / "top.v"):
        s = sources(where)
        assert s.top == "cosyn_top" and s.interval == design.manifest["interval"]
        assert s.files == {"top.v": (design.path / "top.v").read_text()}
    with pytest.raises(CosynError, match=r"no top\.v or rtl/top\.v"):
        sources(tmp_path)
    with pytest.raises(CosynError, match="missing: no such Verilog file or design folder"):
        sources(tmp_path / "missing")


def test_cells_count_as_the_device_counts_resources() -> None:
    ecp5 = fpga.count_resources(
        "ecp5", {"LUT4": 10, "CCU2C": 3, "TRELLIS_DPR16X4": 1, "PFUMX": 4, "DP16KD": 2}
    )
    assert ecp5 == {"lut": 20, "lutram": 4, "carry": 3, "ff": 0, "dsp": 0, "bram": 2}
    xc7 = fpga.count_resources("xc7", {"LUT6": 5, "RAMB36E1": 3, "RAMB18E1": 1, "FDRE": 7})
    assert (xc7["lut"], xc7["bram"], xc7["ff"]) == (5, 7, 7)
    ice40 = fpga.count_resources("ice40", {"SB_DFFESR": 2, "SB_DFF": 1, "SB_RAM40_4K": 1})
    assert (ice40["ff"], ice40["bram"]) == (3, 1)
    with pytest.raises(ValueError, match="No cell table for family 'gowin'"):
        fpga.count_resources("gowin", {})


def _ram_netlist(extra_load: bool = False, cemux: str = "INV") -> dict:
    """A DP16KD whose DOA0 and DOA1 each drive one reset-free register (DOA2 unused)."""
    ram = {"type": "DP16KD", "parameters": {"REGMODE_A": "NOREG", "REGMODE_B": "NOREG",
                                            "DATA_WIDTH_A": "00000000000000000000000000010010"},
           "port_directions": {"DOA0": "output", "DOA1": "output", "DOA2": "output",
                               "CLKA": "input", "RSTA": "input", "OCEA": "input"},
           "connections": {"DOA0": [10], "DOA1": [11], "DOA2": [12], "CLKA": [2],
                           "RSTA": ["0"], "OCEA": ["1"]}}  # fmt: skip

    def ff(d: int, q: int) -> dict:
        con = {"DI": [d], "CE": [3], "CLK": [2], "LSR": ["0"], "Q": [q]}
        return {"type": "TRELLIS_FF", "parameters": {"CEMUX": cemux, "CLKMUX": "CLK",
                                                     "REGSET": "RESET", "LSRMUX": "LSR"},
                "port_directions": {p: "output" if p == "Q" else "input" for p in con},
                "connections": con}  # fmt: skip

    cells = {"ram": ram, "r0": ff(10, 20), "r1": ff(11, 21)}
    if extra_load:
        cells["lut"] = {"type": "LUT4", "port_directions": {"A": "input", "Z": "output"},
                        "connections": {"A": [11], "Z": [30]}}  # fmt: skip
    return {"modules": {"top": {"ports": {}, "cells": cells}}}


@pytest.mark.parametrize("cemux", ["INV", "CE"])
def test_registers_behind_block_ram_move_into_its_output_register(tmp_path, cemux) -> None:
    path = tmp_path / "netlist.json"
    path.write_text(json.dumps(_ram_netlist(cemux=cemux)))
    assert absorb_output_registers(path) == 2
    cells = json.loads(path.read_text())["modules"]["top"]["cells"]
    ram = cells["ram"]
    assert set(cells) == {"ram"} and ram["parameters"]["REGMODE_A"] == "OUTREG"
    assert (ram["connections"]["DOA0"], ram["connections"]["DOA1"]) == ([20], [21])
    assert ram["connections"]["OCEA"] == [3]
    assert ram["parameters"]["OCEAMUX"] == ("INV" if cemux == "INV" else "OCEA")


def test_block_ram_data_used_elsewhere_keeps_its_registers(tmp_path) -> None:
    path = tmp_path / "netlist.json"
    path.write_text(json.dumps(_ram_netlist(extra_load=True)))
    assert absorb_output_registers(path) == 0
    assert json.loads(path.read_text())["modules"]["top"]["cells"]["r0"]


def test_a_design_too_big_says_by_how_much() -> None:
    r = fpga.SynthResult("ice40-up5k", lut=6000, ff=100, carry=0, dsp=9, bram=0, lutram=0,
                         cells={"SB_LUT4": 6000})  # fmt: skip
    assert r.over() == {"lut": (6000, 5280), "dsp": (9, 8)} and not r.fits
    assert r.utilization()["lut"] == pytest.approx(6000 / 5280)
    with pytest.raises(fpga.DoesNotFitError, match=r"ice40-up5k: lut 6,000 of 5,280 \(114%\); dsp"):
        r.check_fits()
    assert "not placed" in str(r.table().caption)


def _self_check_leds(design: rtl.Design, vectors: fpga.Vectors, tmp: Path) -> list[str]:
    """LEDs of SelfCheck around `design` in Icarus, after 400 and after 900 cycles."""
    from amaranth.back import verilog

    check = fpga.SelfCheck(design.manifest, vectors, 25.0)
    (tmp / "board.v").write_text(verilog.convert(check, name="board", ports=[check.leds]))
    (tmp / "tb.v").write_text(
        "module tb; reg clk = 0, rst = 1; wire [7:0] leds;\n"
        "board dut(.clk(clk), .rst(rst), .leds(leds)); always #5 clk = ~clk;\n"
        'initial begin #33 rst = 0; #4000 $display("%b", leds); #5000 $display("%b", leds);\n'
        "$finish; end endmodule\n"
    )
    files = [str(tmp / "tb.v"), str(tmp / "board.v"), str(design.path / "top.v")]
    subprocess.run(["iverilog", "-o", str(tmp / "sim"), *files], check=True)
    out = subprocess.run(["vvp", str(tmp / "sim")], capture_output=True, text=True, check=True)
    return out.stdout.split()


@pytest.mark.slow
def test_the_self_check_wrapper_lights_pass_and_only_a_wrong_output_lights_error(design, tmp_path):
    v = fpga.Vectors.of_graph(design.graph, design.manifest, 5)
    assert v.expected.shape == (5, 3) and np.array_equal(v.expected, design.graph.run_int(
        v.inputs))  # fmt: skip
    assert [leds[-2:] for leds in _self_check_leds(design, v, tmp_path)] == ["01", "01"]
    v.expected[3, 1] += 1
    assert [leds[-2:] for leds in _self_check_leds(design, v, tmp_path)] == ["10", "10"]


@pytest.mark.slow
def test_cli_writes_a_uart_bitstream_for_ulx3s(design, tmp_path, cli) -> None:
    folder = tmp_path / "build"
    rtl.generate(design.graph, folder / "rtl")
    rc, stdout, stderr = cli("synth", str(folder), "--board", "ulx3s-25f", "--freq", "90")
    assert rc == 0, stderr
    bit, report = folder / "synth_ulx3s-25f.bit", folder / "synth_ulx3s-25f.json"
    stdout = " ".join(stdout.split())
    assert "UART at 115,237 baud (asked 115,200)" in stdout and "at 90 MHz (PLL)" in stdout
    assert bit.stat().st_size > 100_000
    rep = json.loads(report.read_text())
    assert rep["board"] == "ulx3s-25f" and rep["synth"]["device"] == "ecp5-25f"
    assert rep["wrapper"] == "uart" and rep["synth"]["cells"]["EHXPLLL"] == 1
    assert rep["clock_mhz"] == 90.0 and rep["synth"]["fmax_mhz"] >= 90.0
    assert rep["baud"] == pytest.approx(90e6 / 781) and rep["vectors"] is None
    assert sorted(p.name for p in folder.iterdir()) == ["rtl", bit.name, report.name]


@pytest.mark.slow
def test_a_self_checking_bitstream_for_icebreaker(design, tmp_path) -> None:
    b = fpga.bitstream(design, "icebreaker", tmp_path / "x.bin", self_check=True, vectors=3,
                       progress=False)  # fmt: skip
    assert b.wrapper == "self-check" and b.vectors == 3 and b.baud is None
    assert b.clock_mhz == 24.0 and b.synth.fmax_mhz is not None and b.synth.fmax_mhz >= 24.0
    assert b.synth.cells["SB_PLL40_PAD"] == 1 and b.synth.device == "ice40-up5k"
    assert (tmp_path / "x.bin").stat().st_size > 100_000
    assert fpga.bitstream_suffix("icebreaker") == ".bin"


@pytest.mark.slow
def test_a_clock_too_fast_for_the_design_says_which_freq_and_writes_nothing(design, tmp_path,
                                                                           cli):  # fmt: skip
    folder = tmp_path / "build"
    rtl.generate(design.graph, folder / "rtl")
    rc, stdout, stderr = cli("synth", str(folder), "--board", "icebreaker", "--freq", "100")
    m = re.search(r"Fmax (\d+)\.\d MHz is below the design's 100.5 MHz clock; rerun with "
                  r"--freq (\d+) or lower", stderr)  # fmt: skip
    assert rc == 2 and m is not None and m.group(1) == m.group(2), stderr
    assert "synthesis on ice40-up5k" in stdout and f"Fmax: {m.group(1)}." in stdout
    assert [p.name for p in folder.iterdir()] == ["rtl"]


def test_unknown_board_lists_the_known_and_a_board_needs_its_device(design, cli) -> None:
    with pytest.raises(
        fpga.UnknownBoardError, match=r"'nope'; known boards: ulx3s-25f, .*, icebreaker"
    ):
        fpga.board("nope")
    rc, _, stderr = cli("synth", str(design.path), "--board", "nope")
    assert rc == 2 and "known boards: ulx3s-25f" in stderr
    rc, _, stderr = cli("synth", str(design.path), "--board", "ulx3s-85f", "--device", "ecp5-25f")
    assert rc == 2 and "is not the ecp5-85f on ulx3s-85f" in stderr


@pytest.mark.slow
def test_a_design_too_big_for_icebreaker_says_which_resource(tmp_path, cli) -> None:
    """12 parallel 8 x 8-bit multipliers: 12 DSPs, where the UP5K has 8."""
    n = 12
    x = Quantize("x", (), (n,), IntType(8, True), ONE)
    w = np.random.default_rng(0).integers(-128, 128, (n, n))
    d = Dense.sized([(np.array([-128]), np.array([127]))], name="d", inputs=("x",), shape=(n,),
                    scale=ONE, weight=w, bias=np.zeros(n, int))  # fmt: skip
    folder = tmp_path / "wide"
    rtl.generate(Graph([x, d]), folder / "rtl", parallelism=n)
    rc, _, stderr = cli("synth", str(folder), "--board", "icebreaker")
    assert rc == 2 and "on icebreaker does not fit ice40-up5k: dsp 12 of 8 (150%)" in stderr
    assert [p.name for p in folder.iterdir()] == ["rtl"]


def test_a_clock_the_pll_cannot_make_is_refused(design, tmp_path, cli) -> None:
    rc, _, stderr = cli("synth", str(design.path), "--board", "icebreaker", "--freq", "400")
    assert rc == 2 and "the ice40 PLL makes 16 to 275 MHz, not 400" in stderr
    assert not any(design.path.glob("synth_*"))


def test_pll_dividers_give_the_clock() -> None:
    c = fpga.pll_config("ecp5", 25.0, 100.0)
    assert (c.ref_div, c.fb_div, c.out_div, c.fout, c.vco) == (1, 4, 6, 100.0, 600.0)
    c = fpga.pll_config("ecp5", 25.0, 48.0)  # not exactly: the nearest
    assert c.fout == 25.0 / c.ref_div * c.fb_div == 46.875
    c = fpga.pll_config("ice40", 12.0, 24.0)
    assert (c.ref_div, c.fb_div, c.out_div, c.filter_range) == (0, 63, 5, 1)
    assert c.fout == 12.0 / (c.ref_div + 1) * (c.fb_div + 1) / 2**c.out_div == 24.0


@pytest.mark.slow
@pytest.mark.parametrize("fout", [150.0, 66.0])
def test_pll_dividers_agree_with_ecppll_and_icepll(fout) -> None:
    from cosyn.hw.fpga._flow import tool

    def run(*args: str) -> str:
        return subprocess.run(args, capture_output=True, text=True, check=True).stdout

    out = run(tool("yowasp-ecppll"), "-i", "25", "-o", f"{fout:g}")
    c = fpga.pll_config("ecp5", 25.0, fout)
    want = [int(v) for v in re.findall(r"(?:Refclk|Feedback|clkout0) divisor: (\d+)", out)]
    assert [c.ref_div, c.fb_div, c.out_div] == want
    out = run(tool("yowasp-icepll"), "-i", "12", "-o", f"{fout / 3:g}")
    c = fpga.pll_config("ice40", 12.0, fout / 3)
    want = [int(v) for v in re.findall(r"^DIV[RFQ]:\s+(\d+)", out, re.M)]
    assert [c.ref_div, c.fb_div, c.out_div] == want


def test_demo_synth_puts_synthesis_beside_the_estimate(cli) -> None:
    from cosyn.perfmodel import Estimate

    from cosyn.cli import _synth_line

    e = Estimate("ecp5-85f", [], latency=9, completion=9, interval=4, lut=110, ff=50, carry=8,
                 dsp=2, bram=0, fmax_mhz=150.0)  # fmt: skip
    s = fpga.SynthResult("ecp5-85f", lut=100, ff=50, carry=8, dsp=2, bram=0, lutram=0, cells={},
                         fmax_mhz=200.0, yosys_s=3.2, pnr_s=10.4)  # fmt: skip
    line = _synth_line(s, e)
    assert line.startswith("100 LUT (estimate 110, +10%), 50 FF (= estimate), 2 DSP (= est")
    assert "Fmax 200 MHz (estimate 150, -25%); yosys 3 s, nextpnr 10 s" in line
    cached = fpga.SynthResult.from_json(s.to_json(), cached=True)
    assert _synth_line(cached, e).endswith("; cached")
    rc, stdout, _ = cli("demo", "--help")
    assert rc == 0 and "--synth" in stdout
