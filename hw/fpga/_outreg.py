"""Block RAM output registers: the fabric register right behind an ECP5 DP16KD's read data
moved into the block's own output register (REGMODE OUTREG), as vendor tools do.

yosys maps a memory's synchronous read to DP16KD without its output register, so the
read data leaves the block 5.6 ns after the clock (nextpnr's figure), most of a 150 MHz
cycle. The RTL registers a block RAM's read data once more, in a register of its own
(no logic between, the same clock, a reset-free register of initial value 0); this pass,
between yosys and nextpnr, puts those registers into the block (enabled by the
register's enable, `OCE`), which gives the same values on every cycle: the data leaves
the block soon after the clock instead. A block is changed only when every read data bit
in use drives one such register and nothing else.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

__all__ = ["absorb_output_registers"]

_BITS = 18  # DO bits per DP16KD port


def absorb_output_registers(netlist: Path) -> int:
    """Rewrite the yosys JSON `netlist` in place (every module); registers absorbed."""
    data = json.loads(netlist.read_text())
    n = sum(_module(mod) for mod in data.get("modules", {}).values())
    if n:
        netlist.write_text(json.dumps(data))
    return n


def _loads(mod: dict[str, Any]) -> dict[Any, list[tuple[str, str]]]:
    """Net bit -> the (cell, port) inputs it drives; a module output counts as a load."""
    loads: dict[Any, list[tuple[str, str]]] = defaultdict(list)
    for name, cell in mod.get("cells", {}).items():
        dirs = cell.get("port_directions", {})
        for port, bits in cell.get("connections", {}).items():
            if dirs.get(port) != "output":
                for b in bits:
                    loads[b].append((name, port))
    for pname, port in mod.get("ports", {}).items():
        if port.get("direction") != "input":
            for b in port["bits"]:
                loads[b].append(("", pname))
    return loads


def _module(mod: dict[str, Any]) -> int:
    cells = mod.get("cells", {})
    loads = _loads(mod)
    absorbed = 0
    for name in [c for c, cell in cells.items() if cell["type"] == "DP16KD"]:
        for side in "AB":
            ffs = _registers(cells, loads, cells[name], side)
            if ffs:
                _absorb(cells, cells[name], side, ffs)
                absorbed += len(ffs)
    return absorbed


def _param(cell: dict[str, Any], name: str, default: str = "") -> str:
    return str(cell.get("parameters", {}).get(name, default)).strip()


def _registers(cells, loads, ram: dict[str, Any], side: str) -> dict[int, str] | None:
    """DO bit -> the register it alone drives, where every DO bit in use drives one
    register (D input) that can be the block's output register; else None."""
    if _param(ram, f"REGMODE_{side}") != "NOREG" or _param(ram, f"DATA_WIDTH_{side}") == "36":
        return None
    con = ram["connections"]
    if con.get(f"RST{side}") != ["0"]:
        return None
    found: dict[int, str] = {}
    for i in range(_BITS):
        bit = con.get(f"DO{side}{i}", [None])[0]
        users = loads.get(bit, []) if isinstance(bit, int) else []
        if not users:
            continue
        if len(users) != 1 or users[0][1] != "DI" or not _plain(cells.get(users[0][0])):
            return None
        found[i] = users[0][0]
    if not found:
        return None
    ffs = [cells[f] for f in found.values()]
    first = ffs[0]["connections"]
    same = all(f["connections"]["CLK"] == first["CLK"] for f in ffs)
    same &= all(_enable(f) == _enable(ffs[0]) for f in ffs)
    rising = _param(ram, f"CLK{side}MUX", f"CLK{side}") == f"CLK{side}"
    return found if same and rising and first["CLK"] == con.get(f"CLK{side}") else None


def _plain(ff: dict[str, Any] | None) -> bool:
    """A rising-edge register of initial value 0 without a reset (TRELLIS_FF)."""
    if ff is None or ff["type"] != "TRELLIS_FF":
        return False
    lsr = ff["connections"].get("LSR", ["0"]) == ["0"] or _param(ff, "LSRMUX", "LSR") == "0"
    return (
        lsr
        and _param(ff, "CLKMUX", "CLK") == "CLK"
        and _param(ff, "REGSET", "RESET") == "RESET"
        and _param(ff, "CEMUX", "CE") in ("CE", "INV", "1")
    )


def _enable(ff: dict[str, Any]) -> tuple[Any, bool]:
    """The register's clock enable: a net bit (or "1") and whether it is inverted."""
    mux = _param(ff, "CEMUX", "CE")
    return ("1", False) if mux == "1" else (ff["connections"].get("CE", ["1"])[0], mux == "INV")


def _absorb(cells, ram: dict[str, Any], side: str, ffs: dict[int, str]) -> None:
    """The block's DO bits drive what the registers' outputs drove; OCE is their enable."""
    con = ram["connections"]
    for i, ff in ffs.items():
        con[f"DO{side}{i}"] = cells[ff]["connections"]["Q"]
    net, inverted = _enable(cells[next(iter(ffs.values()))])
    con[f"OCE{side}"] = [net]
    ram["parameters"][f"OCE{side}MUX"] = "INV" if inverted else f"OCE{side}"
    for ff in set(ffs.values()):
        del cells[ff]
    ram["parameters"][f"REGMODE_{side}"] = "OUTREG"
