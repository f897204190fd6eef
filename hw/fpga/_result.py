"""`SynthResult`: what yosys and nextpnr say about one design on one device."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from cosyn.perfmodel.devices import Device, device
from rich.table import Table

from cosyn.errors import CosynError

__all__ = [
    "CriticalPath",
    "DoesNotFitError",
    "SynthResult",
    "SynthesisError",
    "TimingError",
    "write_whole",
]


class SynthesisError(CosynError):
    """yosys or nextpnr failed; the message names the file and shows the tool's last lines."""


class DoesNotFitError(CosynError):
    """A design that needs more of some resource than the device has."""


class TimingError(SynthesisError):
    """A design placed and routed, but slower than the clock it must run at; `result`
    holds what synthesis found (resources, Fmax, the critical path)."""

    def __init__(self, message: str, result: SynthResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class CriticalPath:
    """The slowest register-to-register path after routing: from the cell `start` to the
    cell `end` (nextpnr's names, which carry the signal names), `delay_ns` in all, of
    which `logic_ns` in cells (clock-to-out, logic, setup) and `routing_ns` in wires."""

    start: str
    end: str
    delay_ns: float
    logic_ns: float
    routing_ns: float


@dataclass(frozen=True)
class SynthResult:
    """Resources and clock speed of a design on `device` (its name).

    `lut`, `lutram`, `carry`, `ff`, `dsp`, `bram`: the family's cells counted as the
    device's resources (see `_cells`); `cells`: yosys' count of each cell type.
    `fmax_mhz` and `critical_path`: nextpnr's after routing toward `target_mhz`, None
    where the device has no open place and route or the design does not fit.
    `yosys_s`, `pnr_s`: seconds each tool ran (when first computed, if cached).
    `interval`: the design's cycles between samples (manifest), None if unknown.
    `cached`: this result was read from the cache (not serialized).
    """

    device: str
    lut: int
    ff: int
    carry: int
    dsp: int
    bram: int
    lutram: int
    cells: dict[str, int]
    fmax_mhz: float | None = None
    target_mhz: float | None = None
    critical_path: CriticalPath | None = None
    yosys_s: float = 0.0
    pnr_s: float | None = None
    interval: int | None = None
    cached: bool = field(default=False, compare=False)

    @property
    def inferences_per_s(self) -> float | None:
        """Throughput at Fmax: fmax / interval samples per second (None if either unknown)."""
        if self.fmax_mhz is None or not self.interval:
            return None
        return self.fmax_mhz * 1e6 / self.interval

    def used(self) -> dict[str, int]:
        """Used amount of each resource the device counts (`Device.capacity()` keys)."""
        return {r: getattr(self, r) for r in device(self.device).capacity()}

    def utilization(self) -> dict[str, float]:
        """Fraction of the device's lut, ff, dsp and bram the design uses (1.0 = full)."""
        cap = device(self.device).capacity()
        return {r: n / cap[r] if cap[r] else float(n > 0) for r, n in self.used().items()}

    def over(self) -> dict[str, tuple[int, int]]:
        """Resources the design needs more of than the device has: name -> (used, available).
        Empty when the design fits."""
        cap = device(self.device).capacity()
        return {r: (n, cap[r]) for r, n in self.used().items() if n > cap[r]}

    @property
    def fits(self) -> bool:
        return not self.over()

    def check_fits(self, what: str = "the design") -> None:
        """Raise DoesNotFitError naming `what`, each resource that overflows and by how
        much."""
        if over := self.over():
            parts = [
                f"{r} {u:,} of {a:,} ({u / a:.0%})" if a else f"{r} {u:,} of 0"
                for r, (u, a) in over.items()
            ]
            raise DoesNotFitError(
                f"{what} does not fit {self.device}: {'; '.join(parts)}; choose a larger "
                "device or less parallelism"
            )

    def with_interval(self, interval: int | None) -> SynthResult:
        """This result for a design whose interval is `interval` cycles."""
        return replace(self, interval=interval)

    def to_dict(self) -> dict[str, Any]:
        """Every field but `cached`, as JSON-ready values, plus the derived figures."""
        d = asdict(self)
        del d["cached"]
        d["utilization"] = self.utilization()
        d["inferences_per_s"] = self.inferences_per_s
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], cached: bool = False) -> SynthResult:
        """The result `to_dict` wrote (derived figures are recomputed, not read)."""
        names = {f for f in cls.__dataclass_fields__ if f != "cached"}
        kw = {k: v for k, v in d.items() if k in names}
        if kw.get("critical_path") is not None:
            kw["critical_path"] = CriticalPath(**kw["critical_path"])
        return cls(**kw, cached=cached)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, cached: bool = False) -> SynthResult:
        return cls.from_dict(json.loads(text), cached)

    def write(self, path: str | Path) -> Path:
        """Write `to_json()` to `path` whole (see `write_whole`); returns the path."""
        return write_whole(path, self.to_json().encode())

    def table(self) -> Table:
        """A rich table of each resource used, available and the fraction; Fmax, the
        critical path and the tools' time below it."""
        dev = device(self.device)
        table = Table(
            title=f"synthesis on {dev.name} ({dev.part})" + " (cached)" * self.cached,
            caption="\n".join(f"{k}: {v}" for k, v in _timing_rows(self, dev)),
            caption_justify="left",
            min_width=64,
        )
        for col in ("resource", "used", "available", "%"):
            table.add_column(col, justify="left" if col == "resource" else "right")
        cap, util = dev.capacity(), self.utilization()
        for r, label in _LABELS.items():
            n = getattr(self, r)
            if r in cap:
                table.add_row(label, f"{n:,}", f"{cap[r]:,}", f"{100 * util[r]:.1f}")
            else:
                table.add_row(label, f"{n:,}", "", "")
        return table


_LABELS = {
    "lut": "LUT",
    "lutram": "  of which LUT RAM",
    "carry": "carry cells",
    "ff": "FF",
    "dsp": "DSP",
    "bram": "BRAM",
}


def _timing_rows(r: SynthResult, dev: Device) -> list[tuple[str, str]]:
    if dev.pnr is None:
        rows = [("Fmax", "no open place and route for this family")]
    elif r.pnr_s is None:
        rows = [("Fmax", "not placed (the design does not fit)")]
    elif r.fmax_mhz is None:
        rows = [("Fmax", "no clocked path")]
    else:
        rows = [("Fmax", f"{r.fmax_mhz:.1f} MHz (target {r.target_mhz:g})")]
    if (p := r.critical_path) is not None:
        delay = f"{p.delay_ns:.2f} ns ({p.logic_ns:.2f} logic + {p.routing_ns:.2f} routing)"
        rows += [("critical path", delay), ("  from", p.start), ("  to", p.end)]
    pnr = f", nextpnr {r.pnr_s:.1f} s" if r.pnr_s is not None else ""
    rows.append(("time", f"yosys {r.yosys_s:.1f} s{pnr}"))
    return rows


def write_whole(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` whole or not at all: a temporary file beside it, renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes it private
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
