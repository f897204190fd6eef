"""`generate`: the graph as `top.v` (module `cosyn_top`) and `manifest.json`, and nothing else."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cosyn.hw.rtl._sequence import SequenceTop
from cosyn.hw.rtl._top import Top, tdata_width
from cosyn.hw.rtl._verilog import component_verilog
from cosyn.perfmodel.devices import Device
from cosyn.perfmodel.pipeline import Stream, plan
from cosyn.perfmodel.sequence import LENGTHS
from cosyn.scheduler.parallelism import design_parallelism

from cosyn.ir.graph import Graph
from cosyn.report import atomic_dir

__all__ = ["Design", "generate", "manifest", "sequence_manifest", "verilog_text"]

TOP = "cosyn_top"


@dataclass
class Design:
    """A generated design: the folder with top.v and manifest.json, the manifest, the graph."""

    path: Path
    manifest: dict[str, Any]
    graph: Graph


def _port(s: Stream) -> dict[str, Any]:
    return _port_of(s.dtype, s.shape, s.order)


def _port_of(t: Any, shape: tuple[int, ...], order: str = "flat") -> dict[str, Any]:
    return {
        "shape": list(shape),
        "order": order,
        "bits": t.bits,
        "signed": t.signed,
        "tdata_width": tdata_width(t),
        "elements": math.prod(shape),
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


def sequence_manifest(top: SequenceTop) -> dict[str, Any]:
    """A sequence design's manifest: its ports (the input carries each sequence's token
    count then its ids, at most `max_tokens`), its blocks (the plan's stages), and
    `quiet`: the most cycles the ports can stand still while a longest sequence is
    inside (every attention block's cycles at that length), which a testbench waits
    before it gives up. A sequence's cycles depend on its length and on its neighbours':
    `perfmodel.sequence.sequence_cycles` gives them for a stream, so there is no one
    latency or interval here."""
    p = top.plan
    out = p.graph.output
    return {
        "top": TOP,
        "sequence": True,
        "max_tokens": top.max_tokens,
        "input": {
            "bits": top.in_type.bits,
            "signed": False,
            "tdata_width": tdata_width(top.in_type),
        },
        "output": _port_of(out.dtype, tuple(out.shape)),
        "nodes": [
            {
                "name": s.name,
                "kind": s.kind,
                "depth": s.depth,
                "parallelism": s.ctx.folding if s.ctx else 1,
            }
            for s in p.stages
        ],
        "skip_fifos": [{"reader": r, "input": j, "depth": d} for r, j, d in top.fifos],
        "count_fifo_depth": LENGTHS,
        "quiet": sum(s.timing.interval(p.rows) for s in p.stages if s.kind == "attention"),
        "macs": p.graph.macs,
    }


def verilog_text(top: Top | SequenceTop) -> str:
    """The Verilog of `top`: module `cosyn_top` (its blocks are modules
    `cosyn_top.<block>`), clock `clk`, synchronous reset `rst`, the AXI4-Stream ports;
    lint-clean under Verilator -Wall with `_verilog.WAIVERS`."""
    return component_verilog(top, TOP)


def generate(
    g: Graph,
    out_dir: str | Path,
    parallelism: int | str | dict | None = None,
    device: str | Device = "ecp5-85f",
) -> Design:
    """Write `out_dir`/top.v and `out_dir`/manifest.json for `g` and return the Design.

    `parallelism` (`cosyn.scheduler.design_parallelism`): None or "auto" (the default:
    each dense/conv2d node's allocated for `device` by `cosyn.scheduler.allocate`, the
    smallest interval that fits it; the default rule where nothing fits), "rule" (one
    multiplier per output up to 64, `default_parallelism`), an int for every dense/conv
    node, or a dict node name -> P or (P, S). A graph of sequences becomes a
    `SequenceTop` (`sequence_manifest`). The folder appears whole or not at all.
    """
    parallelism = design_parallelism(g, device, parallelism)
    if g.sequence:
        seq = SequenceTop(g, parallelism)
        text, man = verilog_text(seq), sequence_manifest(seq)
    else:
        top = Top(plan(g, parallelism))
        text, man = verilog_text(top), manifest(top)
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        (tmp / "top.v").write_text(text)
        (tmp / "manifest.json").write_text(json.dumps(man, indent=2) + "\n")
    return Design(out, man, g)
