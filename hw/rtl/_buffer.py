"""Input buffers in LUT RAM, in banks, so that no read is a deep mux.

A buffer of D words is `ceil(D / bank)` memories of at most `bank` words (`BANK`, or
one memory where its reader places the buffer in block RAM). A read
registers the addressed word of every bank and the bank's index (stage 1 of
`perfmodel.mac`); the bank is chosen after that, in front of stage 2's registers. So
a read is a register, a LUT RAM of at most BANK words and its small mux, and a
register, however deep the buffer.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Shape, Signal, Value, unsigned
from amaranth.lib import memory
from cosyn.hw.rtl._rom import memory_attrs
from cosyn.hw.rtl._window import step
from cosyn.perfmodel.resources import BANK

__all__ = ["Buffer", "pack", "unpack", "word_shape"]


class Buffer:
    """`depth` words of `shape` with one write port and one read port (see above), in
    banks of `bank` words."""

    def __init__(self, m: Module, name: str, shape: Shape, depth: int, bank: int = BANK) -> None:
        self.bits = (min(depth, bank) - 1).bit_length()  # address bits within a bank
        self.banks = []
        for k in range(-(-depth // bank)):
            d = min(bank, depth - k * bank)
            mem = memory.Memory(shape=shape, depth=d, init=[], attrs=memory_attrs(d, rom=False))
            m.submodules[f"{name}{k}"] = mem
            self.banks.append(mem)
        self.shape = Shape.cast(shape)

    def write(self, m: Module, addr: Value, data: Value, en: Value) -> None:
        """Write `data` at `addr` where `en`."""
        for k, mem in enumerate(self.banks):
            port = mem.write_port()
            hit = en if len(self.banks) == 1 else en & ((addr >> self.bits) == k)
            m.d.comb += [port.addr.eq(addr[: self.bits]), port.data.eq(data), port.en.eq(hit)]

    def read(self, m: Module, addr: Value, en: Value) -> Value:
        """The word at `addr`, registered where `en` (one cycle later), then its bank chosen.
        An address outside the buffer reads some word."""
        datas = []
        for mem in self.banks:
            port = mem.read_port(transparent_for=())
            m.d.comb += [port.addr.eq(addr[: self.bits]), port.en.eq(en)]
            datas.append(port.data)
        if len(datas) == 1:
            return datas[0]
        bank = Signal(range(len(datas)))
        with m.If(en):
            m.d.sync += bank.eq(addr >> self.bits)
        return Array(datas)[bank]


def word_shape(shape: Shape, n: int) -> Shape:
    """A buffer word of n elements of `shape` (SIMD): the element's shape where n = 1."""
    shape = Shape.cast(shape)
    return shape if n == 1 else unsigned(n * shape.width)


def pack(m: Module, x: Value, n: int, take: Value) -> tuple[Value, Value]:
    """Elements taken one at a time, n to a word (SIMD): the word to write (the first
    element lowest: the n - 1 taken before, held in registers, and `x`, taken now)
    and whether it is complete (the n-th is taken); n = 1: the element, at every take."""
    if n == 1:
        return x, take
    held = [Signal.like(x, name=f"held{k}") for k in range(n - 1)]
    k = Signal(range(n))
    with m.If(take):
        step(m, k, n - 1)
        for j, r in enumerate(held):
            with m.If(k == j):
                m.d.sync += r.eq(x)
    return Cat(*held, x), take & (k == n - 1)


def unpack(word: Value, shape: Shape, n: int) -> Value | list[Value]:
    """A word's n elements of `shape` (the element itself where n = 1)."""
    shape = Shape.cast(shape)
    if n == 1:
        return word
    w = shape.width
    parts = [word[i * w : (i + 1) * w] for i in range(n)]
    return [e.as_signed() if shape.signed else e for e in parts]
