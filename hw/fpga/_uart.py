"""A UART stream bridge: bytes on a serial line in, the design's outputs as bytes out.

The framing (what a host sends and reads; `encode` and `decode` implement it):

- The line: 8 data bits, no parity, 1 stop bit, least significant bit first, at the
  baud rate the bitstream was built for (`cosyn synth --baud`, 115200 by default).
- Each input element is sent as `manifest["input"]["tdata_width"] // 8` bytes, the
  element's two's complement value little-endian; a sample is its elements back to
  back in the design's stream order (`manifest["input"]["order"]`), and samples follow
  each other with no header or separator.
- Each output element comes back the same way: `tdata_width // 8` bytes of the output
  element, little-endian, sign-extended when the output is signed; a sample's outputs
  in stream order, then the next sample's.
- A break (the line held low for longer than one frame, e.g. pyserial's `send_break`)
  resets the bridge and the design: bytes of a partly sent sample and results not yet
  sent are discarded, and the next byte starts a new sample.
- The bridge holds up to `FIFO_DEPTH` received bytes while the design is busy. It
  keeps up with a continuous stream when a sample's output bytes are no more than its
  input bytes (the design is far faster than the line); otherwise send a sample and
  read its outputs before sending the next. A byte that arrives to a full buffer is
  lost and lights the error LED.

LEDs (`leds`): 0 lit while the design runs (out of reset), 1 lit after a lost byte
(until a break or reset), 2 toggles on each output sample sent.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from amaranth import Cat, ClockSignal, Module, ResetInserter, ResetSignal, Signal
from amaranth.hdl import Instance
from amaranth.lib import wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from cosyn.errors import CosynError

__all__ = ["FIFO_DEPTH", "UartBridge", "UartRx", "UartTx", "decode", "divisor", "encode"]

TOP = "cosyn_top"
FIFO_DEPTH = 32  # received bytes the bridge holds while the design is busy
MIN_DIVISOR = 4  # clock cycles per bit: the receiver samples mid-bit


def divisor(clock_mhz: float, baud: int) -> int:
    """Clock cycles per bit for `baud` at `clock_mhz`; CosynError where the nearest
    whole number is more than 2% off (a UART tolerates about 4% in all)."""
    div = round(clock_mhz * 1e6 / baud)
    if div < MIN_DIVISOR or abs(clock_mhz * 1e6 / div / baud - 1) > 0.02:
        raise CosynError(
            f"{baud} baud is not within 2% of a whole number of {clock_mhz:g} MHz cycles "
            f"(at least {MIN_DIVISOR} per bit); choose a lower baud rate or another clock"
        )
    return div


def _divisor(divisor: int) -> int:
    """A UART's clock cycles per bit, checked."""
    if divisor < MIN_DIVISOR:
        raise ValueError(f"Divisor must be at least {MIN_DIVISOR}, not {divisor!r}")
    return divisor


class UartRx(wiring.Component):
    """A UART receiver (8N1) with `divisor` clock cycles per bit.

    Members: `rx` (In, the line, synchronized here), `data` (Out 8, the last byte),
    `valid` (Out, high for one cycle when `data` is a new byte; nothing waits for it),
    `brk` (Out, high for one cycle after a frame whose stop bit is low: a break or a
    framing error; the receiver then waits for the line to go idle).
    """

    def __init__(self, divisor: int) -> None:
        self.divisor = _divisor(divisor)
        super().__init__({"rx": In(1), "data": Out(8), "valid": Out(1), "brk": Out(1)})

    def elaborate(self, platform: Any) -> Module:
        m = Module()
        line = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, line, init=1)
        timer = Signal(range(self.divisor))
        bit = Signal(range(8))
        m.d.sync += [self.valid.eq(0), self.brk.eq(0)]
        with m.If(timer != 0):
            m.d.sync += timer.eq(timer - 1)
        with m.FSM():
            with m.State("idle"), m.If(~line):
                m.d.sync += timer.eq(self.divisor // 2 - 1)
                m.next = "start"
            with m.State("start"), m.If(timer == 0):  # mid start bit: still low?
                m.d.sync += [timer.eq(self.divisor - 1), bit.eq(0)]
                with m.If(line):
                    m.next = "idle"
                with m.Else():
                    m.next = "data"
            with m.State("data"), m.If(timer == 0):
                m.d.sync += [self.data.eq(self.data[1:] | (line << 7)), bit.eq(bit + 1)]
                m.d.sync += timer.eq(self.divisor - 1)
                with m.If(bit == 7):
                    m.next = "stop"
            with m.State("stop"), m.If(timer == 0):
                with m.If(line):
                    m.d.sync += self.valid.eq(1)
                    m.next = "idle"
                with m.Else():
                    m.d.sync += self.brk.eq(1)
                    m.next = "wait"
            with m.State("wait"), m.If(line):  # after a break: until the line is idle
                m.next = "idle"
        return m


class UartTx(wiring.Component):
    """A UART transmitter (8N1) with `divisor` clock cycles per bit.

    Members: `data` (In 8), `valid` (In), `ready` (Out: the byte is taken on a cycle
    with valid and ready), `tx` (Out, the line, from a register; idle high).
    """

    def __init__(self, divisor: int) -> None:
        self.divisor = _divisor(divisor)
        super().__init__({"data": In(8), "valid": In(1), "ready": Out(1), "tx": Out(1)})

    def elaborate(self, platform: Any) -> Module:
        m = Module()
        frame = Signal(10, init=(1 << 10) - 1)  # stop, data, start: shifted out from bit 0
        left = Signal(range(11))
        timer = Signal(range(self.divisor))
        m.d.comb += [self.tx.eq(frame[0]), self.ready.eq(left == 0)]
        with m.If((left == 0) & self.valid):
            m.d.sync += [frame.eq((self.data << 1) | (1 << 9)), left.eq(10)]
            m.d.sync += timer.eq(self.divisor - 1)
        with m.Elif(left != 0):
            m.d.sync += timer.eq(timer - 1)
            with m.If(timer == 0):
                m.d.sync += [frame.eq(frame[1:] | (1 << 9)), left.eq(left - 1)]
                m.d.sync += timer.eq(self.divisor - 1)
        return m


class UartBridge(wiring.Component):
    """`cosyn_top` (from its Verilog) behind a UART, framed as the module says.

    Members: `rx` (In, the line from the host), `tx` (Out, the line to the host),
    `leds` (Out 3: running, a byte lost, toggles per output sample). Clock and
    synchronous reset: the sync domain's, passed on to `cosyn_top`.
    """

    def __init__(self, manifest: dict, divisor: int) -> None:
        self.in_bytes = manifest["input"]["tdata_width"] // 8
        self.out_bytes = manifest["output"]["tdata_width"] // 8
        self.divisor = divisor
        super().__init__({"rx": In(1), "tx": Out(1), "leds": Out(3)})

    def elaborate(self, platform: Any) -> Module:
        m = Module()
        m.submodules.rx = rx = UartRx(self.divisor)
        m.d.comb += rx.rx.eq(self.rx)
        core = Module()  # everything but the receiver: reset by a break too
        m.submodules.core = ResetInserter(rx.brk)(core)
        core.submodules.fifo = fifo = SyncFIFOBuffered(width=8, depth=FIFO_DEPTH)
        core.d.comb += [fifo.w_data.eq(rx.data), fifo.w_en.eq(rx.valid)]
        error = Signal()
        with core.If(rx.valid & ~fifo.w_rdy):
            core.d.sync += error.eq(1)
        s, mo = self._ports()
        core.submodules.design = Instance(
            TOP,
            i_clk=ClockSignal(),
            i_rst=ResetSignal() | rx.brk,
            i_s_axis_tdata=s["tdata"],
            i_s_axis_tvalid=s["tvalid"],
            i_s_axis_tlast=0,
            o_s_axis_tready=s["tready"],
            o_m_axis_tdata=mo["tdata"],
            o_m_axis_tvalid=mo["tvalid"],
            o_m_axis_tlast=mo["tlast"],
            i_m_axis_tready=mo["tready"],
        )
        self._pack(core, fifo, s)
        core.submodules.tx = tx = UartTx(self.divisor)
        m.d.comb += self.tx.eq(tx.tx)
        self._unpack(core, mo, tx)
        sample = Signal()
        with core.If(mo["tvalid"] & mo["tready"] & mo["tlast"]):
            core.d.sync += sample.eq(~sample)
        running = Signal()
        m.d.comb += [running.eq(~ResetSignal()), self.leds.eq(Cat(running, error, sample))]
        return m

    def _ports(self) -> tuple[dict[str, Signal], dict[str, Signal]]:
        s = {"tdata": Signal(8 * self.in_bytes), "tvalid": Signal(), "tready": Signal()}
        mo = {"tdata": Signal(8 * self.out_bytes), "tvalid": Signal(), "tready": Signal(),
              "tlast": Signal()}  # fmt: skip
        return s, mo

    def _pack(self, m: Module, fifo: SyncFIFOBuffered, s: dict[str, Signal]) -> None:
        """Bytes from the FIFO into an input element, least significant byte first."""
        count = Signal(range(self.in_bytes))
        with m.If(s["tvalid"] & s["tready"]):
            m.d.sync += s["tvalid"].eq(0)
        with m.Elif(~s["tvalid"] & fifo.r_rdy):
            m.d.comb += fifo.r_en.eq(1)
            word = s["tdata"]
            m.d.sync += word.eq(word[8:] | (fifo.r_data << (len(word) - 8)))
            m.d.sync += count.eq(count + 1)
            with m.If(count == self.in_bytes - 1):
                m.d.sync += [count.eq(0), s["tvalid"].eq(1)]

    def _unpack(self, m: Module, mo: dict[str, Signal], tx: UartTx) -> None:
        """An output element into bytes for the transmitter, least significant first."""
        word = Signal(8 * self.out_bytes)
        left = Signal(range(self.out_bytes + 1))
        m.d.comb += [mo["tready"].eq(left == 0), tx.valid.eq(left != 0), tx.data.eq(word[:8])]
        with m.If(mo["tvalid"] & (left == 0)):
            m.d.sync += [word.eq(mo["tdata"]), left.eq(self.out_bytes)]
        with m.If(tx.valid & tx.ready):
            m.d.sync += [word.eq(word[8:]), left.eq(left - 1)]


def encode(manifest: dict, samples: np.ndarray) -> bytes:
    """The bytes a host sends for integer `samples` (samples x input elements, in the
    design's stream order): each element in tdata_width // 8 bytes, little-endian."""
    return _pack(np.asarray(samples, dtype=np.int64), manifest["input"]["tdata_width"] // 8)


def decode(manifest: dict, data: bytes) -> np.ndarray:
    """The output samples (samples x output elements, stream order, int64) in the bytes
    the bridge sent; ValueError when `data` does not hold whole samples."""
    out = manifest["output"]
    n, per = out["tdata_width"] // 8, out["elements"]
    if len(data) % (n * per):
        raise ValueError(f"{len(data)} bytes are not whole samples of {per} x {n} bytes")
    raw = np.frombuffer(data, np.uint8).reshape(-1, n).astype(np.int64)
    v = (raw << (8 * np.arange(n))).sum(axis=1)
    if out["signed"]:
        v = np.where(v >= 1 << (8 * n - 1), v - (1 << (8 * n)), v)
    return v.reshape(-1, per)


def _pack(values: np.ndarray, n: int) -> bytes:
    flat = values.reshape(-1) & ((1 << (8 * n)) - 1)
    return bytes((flat[:, None] >> (8 * np.arange(n))).astype(np.uint8).reshape(-1))
