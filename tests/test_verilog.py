"""Verilog through Amaranth's public back end: cells beyond the pipeline's (`$div`,
`$mod`) convert, lint clean with the shipped waivers and compute Amaranth's arithmetic
in Icarus; the waiver file documents each rule; cosyn uses no private Amaranth names."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from amaranth.hdl import Module, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from cosyn.hw.rtl._verilog import WAIVERS, component_verilog, lint

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("cosyn", "models", "hw", "scheduler", "perfmodel", "sim")  # package-dir of cosyn


class Divide(wiring.Component):
    """Floor division and remainder of signed and unsigned operands (`$divfloor`,
    `$modfloor`, `$div`, `$mod` in Yosys); Amaranth defines x // 0 and x % 0 as 0."""

    def __init__(self) -> None:
        ports = {"a": In(signed(5)), "b": In(signed(3)), "q": Out(signed(6)), "r": Out(signed(3))}
        super().__init__({**ports, "ua": In(5), "ub": In(3), "uq": Out(5), "ur": Out(3)})

    def elaborate(self, platform) -> Module:
        m = Module()
        m.d.comb += [self.q.eq(self.a // self.b), self.r.eq(self.a % self.b)]
        m.d.comb += [self.uq.eq(self.ua // self.ub), self.ur.eq(self.ua % self.ub)]
        return m


_BENCH = """module bench;
  reg signed [4:0] a; reg signed [2:0] b; reg [4:0] ua; reg [2:0] ub;
  wire signed [5:0] q; wire signed [2:0] r; wire [4:0] uq; wire [2:0] ur;
  integer i, j;
  divide dut(.a(a), .b(b), .q(q), .r(r), .ua(ua), .ub(ub), .uq(uq), .ur(ur));
  initial begin
    for (i = -16; i < 16; i = i + 1)
      for (j = -4; j < 4; j = j + 1) begin
        a = i; b = j; ua = i; ub = j; #1;
        $display("%0d %0d %0d %0d %0d %0d %0d %0d", a, b, q, r, ua, ub, uq, ur);
      end
  end
endmodule
"""


def _floor(x: int, y: int) -> tuple[int, int]:
    return (x // y, x % y) if y else (0, 0)


@pytest.fixture(scope="module")
def divide_v(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("divide") / "top.v"
    path.write_text(component_verilog(Divide(), "divide"))
    return path


def test_division_converts_and_lints_clean(divide_v) -> None:
    text = divide_v.read_text()
    assert re.search(r"^module divide\(", text, re.M) and " / " in text and " % " in text
    assert lint(divide_v) == ""


@pytest.mark.skipif(shutil.which("iverilog") is None, reason="needs Icarus Verilog")
def test_division_computes_amaranths_arithmetic_in_icarus(divide_v) -> None:
    (divide_v.parent / "bench.v").write_text(_BENCH)
    run = dict(cwd=divide_v.parent, check=True, capture_output=True, text=True)
    subprocess.run(["iverilog", "-o", "bench.vvp", "bench.v", "top.v"], **run)
    rows = subprocess.run(["vvp", "-n", "bench.vvp"], **run).stdout.split("\n")
    got = [tuple(map(int, row.split())) for row in rows if row and row[0] in "-0123456789"]
    assert len(got) == 256
    for a, b, q, r, ua, ub, uq, ur in got:
        assert (q, r, uq, ur) == (*_floor(a, b), *_floor(ua, ub)), (a, b, ua, ub)


def test_waivers_are_shipped_and_each_says_why() -> None:
    lines = WAIVERS.read_text().splitlines()
    assert lines[0] == "`verilator_config"
    rules = [k for k, line in enumerate(lines) if line.startswith("lint_off")]
    assert rules and all('-file "*top.v"' in lines[k] for k in rules)
    for k in rules:  # a comment above each rule (or above its group of rules)
        above = next(line for line in reversed(lines[:k]) if not line.startswith("lint_off"))
        assert above.startswith("// "), lines[k]
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^"cosyn\.hw\.rtl" = \[.*"\*\.vlt".*\]', pyproject, re.M)


def _found() -> list[tuple[str, str]]:
    """(file relative to the repository, line) of every private use in cosyn's sources."""
    files = sorted(p for d in SOURCES for p in (ROOT / d).rglob("*.py"))
    assert files
    return [(str(p.relative_to(ROOT)), line) for p in files for line in _private_uses(p)]


def _private_uses(path: Path) -> list[str]:
    """The lines of `path` that import a private Amaranth name or silence `MustUse`
    through its mangled attribute."""
    lines = path.read_text().splitlines()
    found = [k for k, line in enumerate(lines) if "_MustUse__" in line]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("amaranth"):
            names = [*node.module.split("."), *(a.name for a in node.names)]
        elif isinstance(node, ast.Import):
            names = [
                n for a in node.names if a.name.startswith("amaranth") for n in a.name.split(".")
            ]
        else:
            continue
        if any(n.startswith("_") for n in names):
            found.append(node.lineno - 1)
    return [lines[k].strip() for k in sorted(set(found))]


def test_no_private_amaranth_names() -> None:
    assert _found() == []
