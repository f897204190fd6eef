"""`estimate(g, device, parallelism)`: latency, interval, resources and clock, per node and whole.

Cycles come from the pipeline plan (`perfmodel.pipeline`): the same plan the RTL
backend builds and writes its manifest from, so they are exact. Resources and the
clock come from the primitives of each block (`perfmodel.resources`) and the
device family's coefficients in `baseline.json` (fitted by `perfmodel.calibrate`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from cosyn.perfmodel.devices import Device, device
from cosyn.perfmodel.pipeline import Plan, plan
from cosyn.perfmodel.resources import FEATURES, Resources, cost, delay_ns, primitives
from rich.table import Table

from cosyn.ir.graph import Graph
from cosyn.report import save_png

__all__ = ["Estimate", "NodeEstimate", "coefficients", "estimate", "estimate_plan"]

RESOURCES = ("lut", "ff", "dsp", "bram")
BASELINE = Path(__file__).with_name("baseline.json")


@cache
def _baseline() -> dict[str, Any]:
    return json.loads(BASELINE.read_text())


def coefficients(family: str, fitted: bool = True) -> dict[str, Any]:
    """The resource and clock model's coefficients for a device family; with `fitted`
    False only its rules (DSP and block RAM thresholds), which hold while the features
    change and are fitted again (`calibrate --refit`)."""
    base = _baseline()
    if fitted and tuple(base["features"]) != FEATURES:
        raise RuntimeError(
            f"{BASELINE} has coefficients for other features than perfmodel.resources.FEATURES; "
            "fit them again: python -m cosyn.perfmodel.calibrate --refit"
        )
    return base["families"][family]


@dataclass
class NodeEstimate:
    """One block of the pipeline: its cycles, resources and the clock it alone allows."""

    name: str
    kind: str
    parallelism: int | tuple[int, int]  # P, or (P, S) with SIMD (`Stage.folding`)
    latency: int
    interval: int
    lut: int
    ff: int
    carry: int
    dsp: int
    bram: int
    fmax_mhz: float


def folding_text(value: int | tuple[int, int]) -> str:
    """A parallelism for a table: "P", or "PxS" with SIMD."""
    return "x".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


@dataclass
class Estimate:
    """The whole design on one device: per node and in total.

    `latency` (from sample 0's first input transfer to its first output transfer),
    `completion` (to its last output transfer: the time the whole answer takes) and
    `interval` are cycles (exact: they equal the RTL simulation);
    `fmax_mhz` the slowest block's clock; `inferences_per_s` = Fmax / interval.
    """

    device: str
    nodes: list[NodeEstimate]
    latency: int
    completion: int
    interval: int
    lut: int
    ff: int
    carry: int
    dsp: int
    bram: int
    fmax_mhz: float
    capacity: dict[str, int] = field(default_factory=dict)

    @property
    def inferences_per_s(self) -> float:
        return self.fmax_mhz * 1e6 / self.interval

    @property
    def latency_us(self) -> float:
        return self.latency / self.fmax_mhz

    def utilization(self) -> dict[str, float]:
        """Used / available per resource (a fraction; above 1 does not fit)."""
        return {r: getattr(self, r) / self.capacity[r] for r in RESOURCES if self.capacity[r]}

    def over(self) -> dict[str, tuple[int, int]]:
        """The resources the design needs more of than the device has: (used, available)."""
        return {
            r: (getattr(self, r), self.capacity[r])
            for r in RESOURCES
            if getattr(self, r) > self.capacity[r]
        }

    @property
    def fits(self) -> bool:
        return not self.over()

    def fit_message(self) -> str:
        """One line: fits, or by how much it does not, per resource."""
        over = self.over()
        if not over:
            return f"fits {self.device}"
        parts = [f"{r.upper()} {u:,} of {a:,} ({u / a:.0%})" for r, (u, a) in over.items()]
        return f"does not fit {self.device}: " + ", ".join(parts)

    def table(self) -> Table:
        """A rich table: one row per block, then the design."""
        t = Table(title=f"estimate on {self.device}")
        cols = (
            "node",
            "kind",
            "P",
            "latency",
            "interval",
            "LUT",
            "FF",
            "carry",
            "DSP",
            "BRAM",
            "Fmax MHz",
        )
        for c in cols:
            t.add_column(c, justify="left" if c in ("node", "kind") else "right")
        for n in self.nodes:
            t.add_row(
                n.name,
                n.kind,
                folding_text(n.parallelism),
                str(n.latency),
                str(n.interval),
                *map(str, (n.lut, n.ff, n.carry, n.dsp, n.bram)),
                f"{n.fmax_mhz:.0f}",
            )
        t.add_section()
        used = self.utilization()
        pct = {r: f" ({used[r]:.0%})" if r in used else "" for r in RESOURCES}
        t.add_row(
            "design",
            "",
            "",
            str(self.latency),
            str(self.interval),
            f"{self.lut}{pct['lut']}",
            f"{self.ff}{pct['ff']}",
            str(self.carry),
            f"{self.dsp}{pct['dsp']}",
            f"{self.bram}{pct['bram']}",
            f"{self.fmax_mhz:.0f}",
        )
        t.caption = (
            f"{self.inferences_per_s:,.0f} inferences/s at {self.fmax_mhz:.0f} MHz, latency "
            f"{self.latency_us:.2f} us (whole answer {self.completion / self.fmax_mhz:.2f} us); "
            f"{self.fit_message()}"
        )
        return t

    def to_json(self) -> str:
        d = asdict(self)
        d["inferences_per_s"] = self.inferences_per_s
        return json.dumps(d, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Estimate:
        d = json.loads(text)
        d.pop("inferences_per_s", None)
        for n in d["nodes"]:  # a (P, S) parallelism comes back from JSON as a list
            if isinstance(n["parallelism"], list):
                n["parallelism"] = tuple(n["parallelism"])
        d["nodes"] = [NodeEstimate(**n) for n in d["nodes"]]
        return cls(**d)

    def plot(self, path: str | Path) -> Path:
        """A PNG bar chart: latency and interval per block, and its LUT, FF and DSP."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = [n.name for n in self.nodes]
        fig, (ax0, ax1) = plt.subplots(2, 1, figsize=(max(6, 0.6 * len(names)), 7), sharex=True)
        x = range(len(names))
        ax0.bar([i - 0.2 for i in x], [n.latency for n in self.nodes], 0.4, label="latency")
        ax0.bar([i + 0.2 for i in x], [n.interval for n in self.nodes], 0.4, label="interval")
        ax0.set_ylabel("cycles")
        ax0.legend()
        ax0.set_title(f"{self.device}: {self.interval} cycles/sample, {self.fmax_mhz:.0f} MHz")
        for k, r in enumerate(("lut", "ff", "dsp")):
            ax1.bar(
                [i + (k - 1) * 0.27 for i in x],
                [getattr(n, r) for n in self.nodes],
                0.27,
                label=r.upper(),
            )
        ax1.set_yscale("symlog")
        ax1.set_ylabel("cells")
        ax1.legend()
        ax1.set_xticks(list(x), names, rotation=45, ha="right")
        fig.tight_layout()
        return save_png(fig, path)


def estimate_plan(p: Plan, dev: str | Device = "ecp5-85f") -> Estimate:
    """The estimate of a plan already made (what `cosyn.rtl.generate` builds from)."""
    dev = device(dev)
    co = coefficients(dev.family)
    nodes, total, worst = [], Resources(), 0.0
    for s in p.stages:
        prims = primitives(s)
        r = cost(prims, dev, co)
        d = delay_ns(prims, dev, co)
        total, worst = total + r, max(worst, d)
        nodes.append(
            NodeEstimate(
                s.name,
                s.kind,
                s.folding,
                int(s.timing.latency),
                int(s.timing.interval),
                **r.as_dict(),
                fmax_mhz=1e3 / d,
            )
        )
    return Estimate(
        dev.name,
        nodes,
        p.latency,
        int(p.sink.times[-1] - p.source.times[0]),
        p.interval,
        **total.as_dict(),
        fmax_mhz=1e3 / worst if worst else 0.0,
        capacity=dev.capacity(),
    )


def estimate(
    g: Graph, device: str | Device = "ecp5-85f", parallelism: int | str | dict | None = None
) -> Estimate:
    """Latency and interval (cycles, exact), LUT, FF, carry, DSP, BRAM and Fmax of the RTL
    that `cosyn.rtl.generate(g, device=device, parallelism=parallelism)` builds, on
    `device`: by default each node's parallelism allocated for the device
    (`scheduler.design_parallelism`), whose estimate the allocation has made."""
    # the scheduler reads this module
    from cosyn.scheduler.parallelism import default_allocation, design_parallelism

    if parallelism in (None, "auto"):
        a = default_allocation(g, device)
        if a is not None:
            return a.estimate
        parallelism = "rule"
    return estimate_plan(plan(g, design_parallelism(g, device, parallelism)), device)
