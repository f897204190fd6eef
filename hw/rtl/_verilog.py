"""Lint-clean Verilog from the Amaranth design: a flat netlist written with explicit widths.

Yosys (Amaranth's built-in) elaborates the design to a flat word-level netlist
(`proc; flatten; memory_collect; opt_clean -purge`, read back as JSON); this module
writes it as Verilog-2001 where every operand is extended or cut to the width of its
operation by an explicit concatenation, so `verilator --lint-only -Wall` finds no
implicit width change. Bits that nothing reads (the high bits of a product that is
kept to the accumulator's width, tlast and the padding of s_axis_tdata) are gathered
in one `unused` wire: Verilator's documented convention for bits dropped on purpose.
"""

from __future__ import annotations

import json
import operator
import re

from amaranth._toolchain.yosys import find_yosys

__all__ = ["netlist_verilog"]

_BINARY = {"$add": "+", "$sub": "-", "$mul": "*", "$and": "&", "$or": "|", "$xor": "^"}
_COMPARE = {"$eq": "==", "$ne": "!=", "$lt": "<", "$le": "<=", "$gt": ">", "$ge": ">="}
_UNARY = {"$not": "~", "$neg": "-", "$pos": ""}
_ORDER = {"$lt": operator.lt, "$le": operator.le, "$gt": operator.gt, "$ge": operator.ge}
_REDUCE = {"$reduce_or": "|", "$reduce_bool": "|", "$reduce_and": "&", "$reduce_xor": "^"}
_SHIFT = {"$shl": "<<", "$sshl": "<<<", "$shr": ">>", "$sshr": ">>>", "$shiftx": ">>"}
_OUTPUTS = {"Y", "Q", "RD_DATA"}
_KEYWORDS = {
    "begin",
    "end",
    "wire",
    "reg",
    "input",
    "output",
    "module",
    "assign",
    "always",
    "initial",
    "if",
    "else",
    "case",
    "default",
    "for",
    "function",
    "integer",
    "unused",
}


def _param(v) -> int:
    if isinstance(v, int):
        return v
    v = v.strip()
    return int(v.replace("x", "0"), 2) if set(v) <= set("01xz") else int(v)


def netlist_json(rtlil_text: str) -> dict:
    """The flat netlist of an RTLIL design as Yosys writes it in JSON."""
    yosys = find_yosys(lambda ver: ver >= (0, 40))
    script = [
        f"read_rtlil <<rtlil\n{rtlil_text}\nrtlil",
        "proc",
        "flatten",
        "memory_collect",
        "opt_clean -purge",
        "write_json",
    ]
    return json.loads(yosys.run(["-q", "-"], "\n".join(script), ignore_warnings=True))


class _Writer:
    """Names every driven vector, renders bit lists as slices, tracks the bits read."""

    def __init__(self, module: dict) -> None:
        self.mod = module
        self.where: dict[int, tuple[str, int]] = {}
        self.width: dict[str, int] = {}
        self.read: set[tuple[str, int]] = set()
        self.names: set[str] = set()
        self.outputs: set[str] = set()
        self.names |= set(module["ports"]) | _KEYWORDS
        self.inputs = [n for n, p in module["ports"].items() if p["direction"] == "input"]
        for name in self.inputs:
            self._declare(name, module["ports"][name]["bits"], fixed=True)
            self.names.add(name)
        pretty = self._pretty_names()
        for cname in sorted(module["cells"]):
            cell = module["cells"][cname]
            for port, bits in sorted(cell["connections"].items()):
                if port in _OUTPUTS and bits:
                    self._declare(pretty.get(tuple(bits), "w"), bits)

    def _pretty_names(self) -> dict[tuple, str]:
        out = {}
        for name, net in sorted(self.mod["netnames"].items()):
            if not net["hide_name"] and name not in self.mod["ports"]:
                out.setdefault(tuple(net["bits"]), re.sub(r"\W", "_", name.split(".")[-1]))
        return out

    def _declare(self, base: str, bits: list, fixed: bool = False) -> str:
        name, k = base, 0
        while not fixed and (name in self.names or name[:1].isdigit() or not name):
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        self.width[name] = len(bits)
        for i, b in enumerate(bits):
            self.where.setdefault(b, (name, i))
        return name

    def fresh(self, base: str) -> str:
        """A new name for something that is not a vector of bits (a memory)."""
        k = 0
        while f"{base}{k}" in self.names:
            k += 1
        self.names.add(f"{base}{k}")
        return f"{base}{k}"

    def target(self, bits: list) -> str:
        """The left-hand side that drives `bits`: a vector or a slice of one."""
        name, lo = self.where[bits[0]]
        if lo == 0 and len(bits) == self.width[name]:
            return name
        return f"{name}[{lo + len(bits) - 1}:{lo}]"

    def vec(self, bits: list) -> str:
        """The name of the vector driven by exactly `bits`."""
        return self.where[bits[0]][0]

    def render(self, bits: list) -> str:
        """`bits` (LSB first) as a Verilog expression of exactly len(bits) bits."""
        runs: list[list] = []  # [name, lo, hi] or [None, chars]
        for b in bits:
            if isinstance(b, str):
                ch = "1" if b == "1" else "0"
                if runs and runs[-1][0] is None:
                    runs[-1][1].append(ch)
                else:
                    runs.append([None, [ch]])
                continue
            name, i = self.where[b]
            self.read.add((name, i))
            if runs and runs[-1][0] == name and runs[-1][2] == i - 1:
                runs[-1][2] = i
            else:
                runs.append([name, i, i])
        parts = [self._run(r) for r in reversed(runs)]
        return parts[0] if len(parts) == 1 else "{" + ", ".join(parts) + "}"

    def _run(self, r: list) -> str:
        if r[0] is None:
            return f"{len(r[1])}'b" + "".join(reversed(r[1]))
        name, lo, hi = r
        if lo == 0 and hi == self.width[name] - 1:
            return name
        return f"{name}[{hi}]" if lo == hi else f"{name}[{hi}:{lo}]"

    def fit(self, bits: list, signed: bool, width: int) -> str:
        """`bits` sign- or zero-extended (or cut) to `width` bits, explicitly."""
        bits = list(bits[:width])
        fill = bits[-1] if signed and bits else "0"
        return self.render(bits + [fill] * (width - len(bits)))

    def unused(self) -> list[tuple[str, int]]:
        return [
            (n, i)
            for n in sorted(self.width)
            for i in range(self.width[n])
            if (n, i) not in self.read and n not in self.outputs
        ]


def _cell(w: _Writer, c: dict, lines: list[str], regs: list[str]) -> None:
    t, p, con = (
        c["type"],
        {k: _param(v) for k, v in c["parameters"].items() if k != "MEMID" and k != "INIT"},
        c["connections"],
    )
    if t == "$mem_v2":
        return _memory(w, c, lines, regs)
    y = w.vec(con["Q"] if t == "$dff" else con["Y"])
    if t == "$dff":
        regs.append(y)
        lines.append(f"  always @(posedge {w.render(con['CLK'])}) {y} <= {w.render(con['D'])};")
        return
    lines.append(f"  assign {y} = {_expr(w, t, p, con)};")


def _expr(w: _Writer, t: str, p: dict, con: dict) -> str:
    yw = len(con["Y"])
    a = lambda n: w.fit(con["A"], p.get("A_SIGNED", 0), n)  # noqa: E731
    b = lambda n: w.fit(con["B"], p.get("B_SIGNED", 0), n)  # noqa: E731
    pad = lambda e: e if yw == 1 else f"{{{yw - 1}'b0, {e}}}"  # noqa: E731
    if t in _BINARY:
        return f"{a(yw)} {_BINARY[t]} {b(yw)}"
    if t in _UNARY:
        return f"{_UNARY[t]}{a(yw)}"
    if t in _COMPARE:
        fixed = _constant_compare(t, p, con)
        if fixed is not None:  # a comparison its operands' range decides (Verilator CMPCONST)
            return pad(f"1'b{fixed}")
        n = max(p["A_WIDTH"], p["B_WIDTH"])
        signed = p["A_SIGNED"] and p["B_SIGNED"]
        x, z = (f"$signed({a(n)})", f"$signed({b(n)})") if signed else (a(n), b(n))
        return pad(f"({x} {_COMPARE[t]} {z})")
    if t in _REDUCE:
        return pad(f"{_REDUCE[t]}{w.render(con['A'])}")
    if t == "$logic_not":
        return pad(f"~(|{w.render(con['A'])})")
    if t in ("$logic_and", "$logic_or"):
        op = "&" if t == "$logic_and" else "|"
        return pad(f"(|{w.render(con['A'])}) {op} (|{w.render(con['B'])})")
    if t == "$mux":
        return f"{w.render(con['S'])} ? {w.render(con['B'])} : {w.render(con['A'])}"
    if t == "$pmux":
        e = w.render(con["A"])
        for i in reversed(range(len(con["S"]))):
            e = f"{w.render([con['S'][i]])} ? {w.render(con['B'][i * yw : (i + 1) * yw])} : ({e})"
        return e
    raise NotImplementedError(t)


def _constant_compare(t: str, p: dict, con: dict) -> int | None:
    """The result of a comparison with a constant that is the same for every value of
    the other operand, else None."""
    const = [all(isinstance(b, str) for b in con[k]) for k in ("A", "B")]
    if const[0] == const[1]:
        return None
    k, other = ("A", "B") if const[0] else ("B", "A")
    bits, signed = con[k], p[f"{k}_SIGNED"] and p[f"{other}_SIGNED"]
    c = int("".join(reversed([b if b == "1" else "0" for b in bits])) or "0", 2)
    if signed and bits and bits[-1] == "1":
        c -= 1 << len(bits)
    w = len(con[other])
    lo, hi = (-(1 << (w - 1)), (1 << (w - 1)) - 1) if signed else (0, (1 << w) - 1)
    if t in ("$eq", "$ne"):
        return None if lo <= c <= hi else int(t == "$ne")
    f = _ORDER[t]
    ends = [int(f(c, x) if k == "A" else f(x, c)) for x in (lo, hi)]
    return ends[0] if ends[0] == ends[1] else None


def _memory(w: _Writer, c: dict, lines: list[str], regs: list[str]) -> None:
    """A memory: an array with its initial contents, read ports (registered or not) and
    write ports with one enable per port."""
    con = c["connections"]
    p = {k: _param(v) for k, v in c["parameters"].items() if k not in ("MEMID", "INIT")}
    width, size, abits = p["WIDTH"], p["SIZE"], p["ABITS"]
    name = w.fresh("mem")
    need = max((size - 1).bit_length(), 1)
    lines.append(f"  reg [{width - 1}:0] {name} [0:{size - 1}];")
    _init(lines, name, c["parameters"].get("INIT", ""), width, size)
    data = w.vec(con["RD_DATA"]) if con["RD_DATA"] else None
    for i in range(p["RD_PORTS"]):
        addr = w.fit(con["RD_ADDR"][i * abits : (i + 1) * abits], False, need)
        bits = con["RD_DATA"][i * width : (i + 1) * width]
        tgt = w.target(bits)
        if p["RD_CLK_ENABLE"] >> i & 1:
            regs.append(data)
            clk, en = w.render([con["RD_CLK"][i]]), w.render([con["RD_EN"][i]])
            lines.append(f"  always @(posedge {clk}) if ({en}) {tgt} <= {name}[{addr}];")
        else:
            lines.append(f"  assign {tgt} = {name}[{addr}];")
    for i in range(p["WR_PORTS"]):
        addr = w.fit(con["WR_ADDR"][i * abits : (i + 1) * abits], False, need)
        en = con["WR_EN"][i * width : (i + 1) * width]
        if len(set(map(str, en))) != 1:
            raise NotImplementedError("memory write enables per bit")
        clk, data_in = (
            w.render([con["WR_CLK"][i]]),
            w.render(con["WR_DATA"][i * width : (i + 1) * width]),
        )
        lines.append(
            f"  always @(posedge {clk}) if ({w.render(en[:1])}) {name}[{addr}] <= {data_in};"
        )


def _init(lines: list[str], name: str, init: str, width: int, size: int) -> None:
    """`initial` contents of a memory, from Yosys's INIT bits (most significant first)."""
    if not init or set(init) <= {"x"}:
        return
    words = [init[len(init) - (k + 1) * width : len(init) - k * width] for k in range(size)]
    lines.append("  initial begin")
    for k, word in enumerate(words):
        lines.append(f"    {name}[{k}] = {width}'b{word.replace('x', '0')};")
    lines.append("  end")


def netlist_verilog(rtlil_text: str, top: str) -> str:
    """Verilog-2001 of the design `top` in `rtlil_text`, lint-clean under Verilator -Wall."""
    mod = netlist_json(rtlil_text)["modules"][top]
    w = _Writer(mod)
    lines: list[str] = []
    regs: list[str] = []
    shifts = []
    for cname in sorted(mod["cells"]):
        c = mod["cells"][cname]
        if c["type"] in _SHIFT:
            shifts.append(c)
            continue
        _cell(w, c, lines, regs)
    for c in shifts:
        _shift(w, c, lines)
    outs = [(n, p["bits"]) for n, p in mod["ports"].items() if p["direction"] == "output"]
    w.outputs = {n for n, _ in outs}
    for n, bits in outs:
        lines.append(f"  assign {n} = {w.render(bits)};")
    return _module(w, top, mod, lines, regs)


def _shift(w: _Writer, c: dict, lines: list[str]) -> None:
    """A shift by a variable amount, computed at full width, then cut to Y."""
    con, p = c["connections"], {k: _param(v) for k, v in c["parameters"].items()}
    yw = len(con["Y"])
    n = max(yw, p["A_WIDTH"])
    key = id(c)
    full = w._declare(w.vec(con["Y"]) + "_full", [(key, i) for i in range(n)])
    a = w.fit(con["A"], p.get("A_SIGNED", 0), n)
    if p.get("A_SIGNED", 0) and c["type"] == "$sshr":
        a = f"$signed({a})"
    lines.append(f"  assign {full} = {a} {_SHIFT[c['type']]} {w.render(con['B'])};")
    lines.append(f"  assign {w.vec(con['Y'])} = {w.render([(key, i) for i in range(yw)])};")


def _module(w: _Writer, top: str, mod: dict, lines: list[str], regs: list[str]) -> str:
    ports = list(mod["ports"])
    head = [
        "// Generated by cosyn (hw/rtl): do not edit.",
        "/* verilator lint_off DECLFILENAME */  // the file is top.v; the module is cosyn_top",
        f"module {top} ({', '.join(ports)});",
        "/* verilator lint_on DECLFILENAME */",
    ]
    for n, p in mod["ports"].items():
        width = len(p["bits"])
        rng = f" [{width - 1}:0]" if width > 1 else ""
        head.append(f"  {p['direction']} wire{rng} {n};")
    for n in sorted(w.width):
        if n in mod["ports"]:
            continue
        rng = f" [{w.width[n] - 1}:0]" if w.width[n] > 1 else ""
        head.append(f"  {'reg' if n in regs else 'wire'}{rng} {n};")
    drop = w.unused()
    tail = []
    if drop:
        bits = ", ".join(f"{n}[{i}]" if w.width[n] > 1 else n for n, i in drop)
        tail.append(f"  wire unused = &{{1'b0, {bits}}};")
    return "\n".join(head + lines + tail + ["endmodule", ""])
