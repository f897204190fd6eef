"""Boards, and the top level that puts a wrapped design on one.

A `Board` names an amaranth-boards platform, the device on it, its oscillator and the
clock a design runs at by default. `BoardTop` makes that clock with the family's PLL
(`_pll`), holds the sync domain in reset until the PLL has locked and 15 cycles more,
and connects a wrapper (`UartBridge` or `SelfCheck`) to the board's pins: the UART
(rx, tx) where the wrapper has one, and as many of the wrapper's LEDs as the board has.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from amaranth import ClockDomain, ClockSignal, Elaboratable, Module, ResetSignal, Signal
from amaranth.lib import io
from amaranth_boards.icebreaker import ICEBreakerPlatform
from amaranth_boards.ulx3s import ULX3S_25F_Platform, ULX3S_45F_Platform, ULX3S_85F_Platform
from cosyn.hw.fpga._pll import PLL, PLLConfig
from cosyn.perfmodel.devices import device

from cosyn.errors import CosynError

__all__ = ["BOARDS", "Board", "BoardTop", "UnknownBoardError", "board"]


class UnknownBoardError(CosynError):
    """A board name that cosyn has no definition for."""


@dataclass(frozen=True)
class Board:
    """A board: its name, the device on it (`perfmodel.devices`), its amaranth-boards
    platform class, its oscillator's frequency and the design clock by default (MHz)."""

    name: str
    device: str
    platform: Callable[[], Any]
    clock_mhz: float
    design_mhz: float

    @property
    def family(self) -> str:
        return device(self.device).family


BOARDS: dict[str, Board] = {
    b.name: b
    for b in (
        Board("ulx3s-25f", "ecp5-25f", ULX3S_25F_Platform, 25.0, 100.0),
        Board("ulx3s-45f", "ecp5-45f", ULX3S_45F_Platform, 25.0, 100.0),
        Board("ulx3s-85f", "ecp5-85f", ULX3S_85F_Platform, 25.0, 100.0),
        Board("icebreaker", "ice40-up5k", ICEBreakerPlatform, 12.0, 24.0),
    )
}


def board(name: str | Board) -> Board:
    """The board called `name` (a Board passes through); an unknown name lists the known."""
    if isinstance(name, Board):
        return name
    if name.lower() not in BOARDS:
        raise UnknownBoardError(f"unknown board {name!r}; known boards: {', '.join(BOARDS)}")
    return BOARDS[name.lower()]


class BoardTop(Elaboratable):
    """`wrapper` (an Elaboratable in the sync domain with `leds`, and `rx`/`tx` for a
    UART) on a board's pins, its sync domain at the PLL `pll`'s output."""

    RESET_CYCLES = 15

    def __init__(self, wrapper: Any, pll: PLLConfig) -> None:
        self.wrapper = wrapper
        self.pll = pll

    def elaborate(self, platform: Any) -> Module:
        m = Module()
        pad = platform.request(platform.default_clk, dir="-")
        if self.pll.family == "ecp5":
            m.submodules.clk_in = buf = io.Buffer("i", pad)
            pll = PLL(self.pll, buf.i)
        else:  # iCE40: the oscillator's pin is the PLL's pad
            pll = PLL(self.pll, pad.io)
        m.submodules.pll = pll.instance
        m.domains.sync = ClockDomain("sync")
        m.domains.por = ClockDomain("por", reset_less=True)
        m.d.comb += [ClockSignal("sync").eq(pll.clk), ClockSignal("por").eq(pll.clk)]
        timer = Signal(range(self.RESET_CYCLES + 1), init=self.RESET_CYCLES)
        with m.If(~pll.locked):
            m.d.por += timer.eq(self.RESET_CYCLES)
        with m.Elif(timer != 0):
            m.d.por += timer.eq(timer - 1)
        m.d.comb += ResetSignal("sync").eq(timer != 0)
        m.submodules.wrapper = w = self.wrapper
        if hasattr(w, "rx"):
            raw = {sub.name: "-" for sub in platform.lookup("uart", 0).ios}  # ports, no buffers
            uart = platform.request("uart", 0, dir=raw)
            m.submodules.uart_rx = rx = io.Buffer("i", uart.rx)
            m.submodules.uart_tx = tx = io.Buffer("o", uart.tx)
            m.d.comb += [w.rx.eq(rx.i), tx.o.eq(w.tx)]
        for k in range(len(w.leds)):
            if ("led", k) not in platform.resources:
                break
            m.submodules[f"led{k}"] = led = io.Buffer("o", platform.request("led", k, dir="-"))
            m.d.comb += led.o.eq(w.leds[k])
        return m
