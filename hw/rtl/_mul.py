"""The multipliers of the multiply-accumulate lanes: stages 3 and 4 of `perfmodel.mac`.

P lanes multiply their own weight by one shared element. Where the weights have at
most `NARROW` bits the products are built in LUTs from multiples of the element that
all lanes share: stage 3 registers x, 3x and -x (in copies, each feeding a few
lanes), stage 4 selects one multiple per pair of weight bits (a 4:1 mux) and sums
the pairs (one carry chain). Wider weights use a multiplier block with a register on
each side (stage 3 the product, stage 4 a second register toward the accumulator).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, Value
from cosyn.perfmodel.mac import NARROW
from cosyn.perfmodel.resources import FANOUT, copies

__all__ = ["copy_init", "multiples", "pair_terms", "products", "sum_pairs"]


def copy_init(k: int, shape) -> int:
    """The reset value of copy k of a register: copies differ in every bit, so synthesis
    does not merge them back into one."""
    return (-1 if shape.signed else (1 << shape.width) - 1) if k % 2 else 0


def products(m: Module, xs: list[Signal], ws: list[Signal], runs: list[Value]) -> list[Signal]:
    """w_j * x for each lane j, x from stage 2's copies `xs` (lane j reads copy j*len/P),
    the weights `ws` from stage 2's registers; the products registered at stage 4. The
    registers of copy k and of the lanes reading it are enabled by `runs[k]`."""
    if Value.cast(ws[0]).shape().width <= NARROW:
        return _lut_products(m, xs, ws, runs)
    p = len(ws)
    prods = []
    for j, w in enumerate(ws):
        k = j * len(xs) // p
        x = xs[k]
        full = Signal((w * x).shape(), name=f"mul{j}")
        prod = Signal.like(full, name=f"prod{j}")
        with m.If(runs[k]):
            m.d.sync += [full.eq(w * x), prod.eq(full)]
        prods.append(prod)
    return prods


def _lut_products(m: Module, xs: list[Signal], ws: list[Signal], runs: list[Value]) -> list[Signal]:
    p = len(ws)
    per = copies(p, 2 * FANOUT)  # copies of the multiples per copy of x
    mults = []
    for x, run in zip(xs, runs, strict=True):
        for k in range(per):
            regs = {}
            for f, v in multiples(x).items():
                name = f"{x.name}_m{f}_{k}".replace("-", "n")
                regs[f] = Signal(v.shape(), name=name, init=copy_init(k, v.shape()))
                with m.If(run):
                    m.d.sync += regs[f].eq(v)
            mults.append(regs)
    prods = []
    for j, w in enumerate(ws):
        w3 = Signal.like(w, name=f"w{j}_3")
        prod = Signal((w * xs[0]).shape(), name=f"prod{j}")
        with m.If(runs[j * len(runs) // p]):
            m.d.sync += w3.eq(w)
            m.d.sync += prod.eq(sum_pairs(pair_terms(w3, mults[j * len(mults) // p]))[0])
        prods.append(prod)
    return prods


def multiples(x: Value) -> dict[int, Value]:
    """x, 3x and -x, by adds (no multiplier block): what `pair_terms` selects from."""
    x = Value.cast(x)
    return {1: x, 3: Value.cast(x + (x << 1)), -1: Value.cast(-x)}


def pair_terms(w: Value, mult: dict[int, Value]) -> list[Value]:
    """w * x as terms to sum, one per pair of bits of w, from the multiples of x."""
    return [_select(w, b, mult) << b for b in range(0, Value.cast(w).shape().width, 2)]


def sum_pairs(terms: list[Value]) -> list[Value]:
    """Adjacent terms summed: half as many (one carry chain each)."""
    return [
        terms[k] + terms[k + 1] if k + 1 < len(terms) else terms[k] for k in range(0, len(terms), 2)
    ]


def _select(w: Value, b: int, mult: dict[int, Value]) -> Value:
    """Bits b and b+1 of w (b only, at the top of an odd width) times x, from the
    multiples: 0, x, 2x, 3x; the top bits of a signed w weigh -2 (0, x, -2x, -x)."""
    shape = Value.cast(w).shape()
    top = b + 2 >= shape.width
    neg = shape.signed and top
    if b + 1 == shape.width:  # one bit left
        return Mux(w[b], mult[-1] if neg else mult[1], 0)
    high = (mult[-1] << 1) if neg else (mult[1] << 1)
    hi3 = mult[-1] if neg else mult[3]
    return Mux(w[b + 1], Mux(w[b], hi3, high), Mux(w[b], mult[1], 0))
