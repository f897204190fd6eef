"""`generate`: the graph as `top.v` (module `cosyn_top`) and `manifest.json`, and nothing else."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cosyn.hw.rtl._top import Top, tdata_width
from cosyn.hw.rtl._verilog import component_verilog
from cosyn.perfmodel.pipeline import Stream, plan

from cosyn.ir.graph import Graph
from cosyn.report import atomic_dir

__all__ = ["Design", "generate", "manifest", "verilog_text"]

TOP = "cosyn_top"


@dataclass
class Design:
    """A generated design: the folder with top.v and manifest.json, the manifest, the graph."""

    path: Path
    manifest: dict[str, Any]
    graph: Graph


def _port(s: Stream) -> dict[str, Any]:
    return {
        "shape": list(s.shape),
        "order": s.order,
        "bits": s.dtype.bits,
        "signed": s.dtype.signed,
        "tdata_width": tdata_width(s.dtype),
        "elements": math.prod(s.shape),
    }


def manifest(top: Top) -> dict[str, Any]:
    """What the simulator and the user need: ports, per-node parallelism and timing.

    `latency`: cycles from the first input transfer to the first output transfer of
    sample 0 (pipeline empty, input offered every cycle, output always ready).
    `interval`: cycles between the first output transfers of consecutive samples in
    steady state under the same conditions (at least the slowest stage's interval, more
    where a block's stalls between samples slow its producers; see `perfmodel.steady`);
    measure it between the last two samples of a full-rate run of several samples. All
    of it is the performance model's plan (`perfmodel.pipeline`). Entries in
    `nodes` of kind "fifo" and "fork" are blocks the pipeline added ("note" gives a
    FIFO's depth). `macs` and `multipliers` give the ideal ceil(macs / multipliers).
    """
    p = top.plan
    return {
        "top": TOP,
        "input": _port(p.source),
        "output": _port(p.sink),
        "nodes": [s.record() for s in p.stages],
        "latency": p.latency,
        "interval": p.interval,
        "macs": p.graph.macs,
        "multipliers": p.multipliers,
    }


def verilog_text(top: Top) -> str:
    """The Verilog of `top`: module `cosyn_top` (its blocks are modules
    `cosyn_top.<block>`), clock `clk`, synchronous reset `rst`, the AXI4-Stream ports;
    lint-clean under Verilator -Wall with `_verilog.WAIVERS`."""
    return component_verilog(top, TOP)


def generate(g: Graph, out_dir: str | Path, parallelism: int | dict | None = None) -> Design:
    """Write `out_dir`/top.v and `out_dir`/manifest.json for `g` and return the Design.

    `parallelism`: None (the default rule, `default_parallelism`), an int for every
    dense/conv node, or a dict node name -> int. The folder appears whole or not at all.
    """
    top = Top(plan(g, parallelism))
    text = verilog_text(top)
    man = manifest(top)
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        (tmp / "top.v").write_text(text)
        (tmp / "manifest.json").write_text(json.dumps(man, indent=2) + "\n")
    return Design(out, man, g)
