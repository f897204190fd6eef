"""Boards, and the self-checking wrapper that puts a generated design on one.

`SelfCheck` feeds `cosyn_top` a fixed stream of test vectors from a ROM, over and over,
and compares every output element (and `tlast`) with the golden model's, from another
ROM. Its LEDs: 0 lit once every vector of a pass came out right and none ever wrong,
1 lit on any wrong output (it stays lit), 2 to 7 count passes (they blink while it
runs). The pins and the clock are amaranth-boards' platform's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from amaranth import ClockSignal, Elaboratable, Module, Mux, Signal, unsigned
from amaranth.hdl import Instance
from amaranth.lib import io
from amaranth.lib.memory import Memory
from amaranth_boards.ulx3s import ULX3S_25F_Platform, ULX3S_45F_Platform, ULX3S_85F_Platform
from cosyn.perfmodel.pipeline import stream_index

from cosyn.errors import CosynError

__all__ = ["BOARDS", "Board", "SelfCheck", "UnknownBoardError", "Vectors", "board"]

TOP = "cosyn_top"


class UnknownBoardError(CosynError):
    """A board name that cosyn has no definition for."""


@dataclass(frozen=True)
class Board:
    """A board: its name, the device on it (`perfmodel.devices`), its amaranth-boards
    platform class and the frequency of the clock the design runs on, in MHz."""

    name: str
    device: str
    platform: Callable[[], Any]
    clock_mhz: float


BOARDS: dict[str, Board] = {
    b.name: b
    for b in (
        Board("ulx3s-25f", "ecp5-25f", ULX3S_25F_Platform, 25.0),
        Board("ulx3s-45f", "ecp5-45f", ULX3S_45F_Platform, 25.0),
        Board("ulx3s-85f", "ecp5-85f", ULX3S_85F_Platform, 25.0),
    )
}


def board(name: str | Board) -> Board:
    """The board called `name` (a Board passes through); an unknown name lists the known."""
    if isinstance(name, Board):
        return name
    if name.lower() not in BOARDS:
        raise UnknownBoardError(f"unknown board {name!r}; known boards: {', '.join(BOARDS)}")
    return BOARDS[name.lower()]


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
    checker of its outputs, on a board's default clock; LEDs as the module says."""

    def __init__(self, manifest: dict, vectors: Vectors, clock_mhz: float) -> None:
        if len(vectors.inputs) == 0:
            raise ValueError("SelfCheck needs at least one test vector")
        self.manifest = manifest
        self.vectors = vectors
        self.clock_mhz = clock_mhz
        self.leds = Signal(8)  # the LEDs, where elaborated without a platform (simulation)

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
        por = Signal(4, init=15)  # the core's reset for 15 cycles after configuration
        with m.If(por != 0):
            m.d.sync += por.eq(por - 1)
        running = Signal()
        m.d.comb += running.eq(por == 0)
        s_ready, m_valid, m_last = Signal(), Signal(), Signal()
        m_data = Signal(wout)
        m.submodules.core = Instance(
            TOP,
            i_clk=ClockSignal(),
            i_rst=por != 0,
            i_s_axis_tdata=feed.data[:win],
            i_s_axis_tvalid=running,
            i_s_axis_tlast=feed.data[win],
            o_s_axis_tready=s_ready,
            o_m_axis_tdata=m_data,
            o_m_axis_tvalid=m_valid,
            o_m_axis_tlast=m_last,
            i_m_axis_tready=1,
        )
        with m.If(s_ready & running):
            m.d.sync += feed.addr.eq(_next(feed.addr, rom_in.depth))
        passes, error = Signal(32), Signal()
        with m.If(m_valid & running):
            m.d.sync += check.addr.eq(_next(check.addr, rom_out.depth))
            with m.If((m_data[:bits] != check.data[:bits]) | (m_last != check.data[bits])):
                m.d.sync += error.eq(1)
            with m.If(check.addr == rom_out.depth - 1):
                m.d.sync += passes.eq(passes + 1)
        blink = self._blink_bit()
        leds = self.leds
        m.d.comb += [leds[0].eq((passes != 0) & ~error), leds[1].eq(error)]
        m.d.comb += [leds[k].eq(passes[blink + k - 2]) for k in range(2, 8)]
        if platform is not None:  # the board's LED pins, through output buffers
            for k in range(8):
                m.submodules[f"led{k}"] = buf = io.Buffer("o", platform.request("led", k, dir="-"))
                m.d.comb += buf.o.eq(leds[k])
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
