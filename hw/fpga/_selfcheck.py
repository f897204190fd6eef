"""`SelfCheck`: a design that checks itself on a board, with no host attached.

`SelfCheck` feeds `cosyn_top` a fixed stream of test vectors from a ROM, over and over,
and compares every output element (and `tlast`) with the golden model's, from another
ROM. Its LEDs (`leds`): 0 lit once every vector of a pass came out right and none ever
wrong, 1 lit on any wrong output (it stays lit), 2 to 7 count passes (they blink while
it runs). `cosyn synth --board B --self-check` builds it instead of the UART bridge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from amaranth import ClockSignal, Elaboratable, Module, Mux, ResetSignal, Signal, unsigned
from amaranth.hdl import Instance
from amaranth.lib.memory import Memory
from cosyn.perfmodel.pipeline import stream_index

__all__ = ["SelfCheck", "Vectors"]

TOP = "cosyn_top"


@dataclass(frozen=True)
class Vectors:
    """Integer samples in the design's stream order: `inputs` (n, input elements) and the
    golden model's `expected` (n, output elements)."""

    inputs: np.ndarray
    expected: np.ndarray

    @classmethod
    def of_graph(cls, graph: Any, manifest: dict, n: int, seed: int = 0) -> Vectors:
        """`n` random samples over the input type's whole range, and the golden outputs."""
        t = graph.input.dtype
        x = np.random.default_rng(seed).integers(t.lo, t.hi + 1, (n, *graph.input.shape))
        y = graph.run_int(x)
        i, o = manifest["input"], manifest["output"]
        return cls(_stream(x, i), _stream(y, o))


def _stream(a: np.ndarray, port: dict) -> np.ndarray:
    flat = a.reshape(len(a), -1)
    return flat[:, stream_index(tuple(port["shape"]), port["order"])]


class SelfCheck(Elaboratable):
    """The design (`cosyn_top`, from its Verilog) between a ROM of input vectors and a
    checker of its outputs, in the sync domain (whose reset it passes on), at
    `clock_mhz`; `leds` (8) as the module says."""

    def __init__(self, manifest: dict, vectors: Vectors, clock_mhz: float) -> None:
        if len(vectors.inputs) == 0:
            raise ValueError("SelfCheck needs at least one test vector")
        self.manifest = manifest
        self.vectors = vectors
        self.clock_mhz = clock_mhz
        self.leds = Signal(8)

    def _roms(self) -> tuple[Memory, Memory, int, int]:
        """ROM words: input element | tlast << tdata width; expected output's low `bits`
        bits | tlast << bits."""
        i, o = self.manifest["input"], self.manifest["output"]
        win, bits = i["tdata_width"], o["bits"]
        rom_in = _words(self.vectors.inputs, win)
        rom_out = _words(self.vectors.expected, bits)
        return (
            Memory(shape=unsigned(win + 1), depth=len(rom_in), init=rom_in),
            Memory(shape=unsigned(bits + 1), depth=len(rom_out), init=rom_out),
            win,
            bits,
        )

    def elaborate(self, platform: Any) -> Module:
        m = Module()
        rom_in, rom_out, win, bits = self._roms()
        m.submodules.rom_in, m.submodules.rom_out = rom_in, rom_out
        feed, check = rom_in.read_port(domain="comb"), rom_out.read_port(domain="comb")
        wout = self.manifest["output"]["tdata_width"]
        s_ready, m_valid, m_last = Signal(), Signal(), Signal()
        m_data = Signal(wout)
        m.submodules.core = Instance(
            TOP,
            i_clk=ClockSignal(),
            i_rst=ResetSignal(),
            i_s_axis_tdata=feed.data[:win],
            i_s_axis_tvalid=1,
            i_s_axis_tlast=feed.data[win],
            o_s_axis_tready=s_ready,
            o_m_axis_tdata=m_data,
            o_m_axis_tvalid=m_valid,
            o_m_axis_tlast=m_last,
            i_m_axis_tready=1,
        )
        with m.If(s_ready):
            m.d.sync += feed.addr.eq(_next(feed.addr, rom_in.depth))
        passes, error = Signal(32), Signal()
        with m.If(m_valid):
            m.d.sync += check.addr.eq(_next(check.addr, rom_out.depth))
            with m.If((m_data[:bits] != check.data[:bits]) | (m_last != check.data[bits])):
                m.d.sync += error.eq(1)
            with m.If(check.addr == rom_out.depth - 1):
                m.d.sync += passes.eq(passes + 1)
        blink = self._blink_bit()
        leds = self.leds
        m.d.comb += [leds[0].eq((passes != 0) & ~error), leds[1].eq(error)]
        m.d.comb += [leds[k].eq(passes[blink + k - 2]) for k in range(2, 8)]
        return m

    def _blink_bit(self) -> int:
        """The bit of the pass count that toggles about once a second at full rate."""
        cycles = max(1, int(self.manifest["interval"])) * len(self.vectors.inputs)
        per_s = self.clock_mhz * 1e6 / cycles
        return max(0, min(26, round(math.log2(max(per_s, 1.0)))))


def _words(samples: np.ndarray, width: int) -> list[int]:
    """Each element's low `width` bits, with bit `width` set on each sample's last."""
    last = samples.shape[1] - 1
    mask = (1 << width) - 1
    return [(int(v) & mask) | (int(k == last) << width) for row in samples for k, v in
            enumerate(row)]  # fmt: skip


def _next(addr: Signal, depth: int) -> Any:
    """The address after `addr` in a ROM of `depth` words, back to 0 after the last."""
    return Mux(addr == depth - 1, 0, addr + 1)
