"""The multipliers of the multiply-accumulate lanes: stages 3 and 4 of `perfmodel.mac`.

P lanes multiply their own weight by one shared element (with SIMD S, each lane its S
weights by S shared elements; `hw/rtl/_mac.py` sums them in a stage of its own). Where
the weights have at most `NARROW` bits the products are built in LUTs from multiples of
the element that all lanes share: stage 3 registers x, 3x and -x (in copies, each
feeding a few lanes), stage 4 selects one multiple per pair of weight bits (a 4:1 mux)
and sums the pairs (one carry chain). Wider weights use a multiplier block with a
register on each side (stage 3 the product, stage 4 a second register toward the
accumulator).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, Value
from cosyn.perfmodel.mac import NARROW
from cosyn.perfmodel.resources import FANOUT, copies

__all__ = ["copy_init", "multiples", "pair_terms", "products", "sum_pairs", "total"]


def copy_init(k: int, shape) -> int:
    """The reset value of copy k of a register: copies differ in every bit, so synthesis
    does not merge them back into one."""
    return (-1 if shape.signed else (1 << shape.width) - 1) if k % 2 else 0


def products(
    m: Module, xs: list[list[Signal]], ws: list[Signal], runs: list[Value]
) -> list[list[Signal]]:
    """w_js * x_s for each lane j and each of its S terms (S = SIMD, 1 without), the
    elements from stage 2's copies `xs` (each S elements; lane j reads copy j*len/P),
    the weights `ws` (P*S, lane j's S in a row) from stage 2's registers; each product
    registered at stage 4 (lane j's S products: element j). The registers of copy k and
    of the lanes reading it are enabled by `runs[k]`."""
    if Value.cast(ws[0]).shape().width <= NARROW:
        return _lut_products(m, xs, ws, runs)
    s = len(xs[0])
    p = len(ws) // s
    prods = []
    for j in range(p):
        k = j * len(xs) // p
        lane = []
        for i in range(s):
            w, x, tag = ws[j * s + i], xs[k][i], f"{j}" + (f"_{i}" if s > 1 else "")
            full = Signal((w * x).shape(), name=f"mul{tag}")
            prod = Signal.like(full, name=f"prod{tag}")
            with m.If(runs[k]):
                m.d.sync += [full.eq(w * x), prod.eq(full)]
            lane.append(prod)
        prods.append(lane)
    return prods


def _lut_products(
    m: Module, xs: list[list[Signal]], ws: list[Signal], runs: list[Value]
) -> list[list[Signal]]:
    s = len(xs[0])
    p = len(ws) // s
    per = copies(p, 2 * FANOUT)  # copies of the multiples per copy of x
    mults = []  # per copy of x and of the multiples: the S elements' multiples
    for x, run in zip(xs, runs, strict=True):
        for k in range(per):
            ms = []
            for e in x:
                regs = {}
                for f, v in multiples(e).items():
                    name = f"{e.name}_m{f}_{k}".replace("-", "n")
                    regs[f] = Signal(v.shape(), name=name, init=copy_init(k, v.shape()))
                    with m.If(run):
                        m.d.sync += regs[f].eq(v)
                ms.append(regs)
            mults.append(ms)
    prods = []
    for j in range(p):
        ms, lane = mults[j * len(mults) // p], []
        for i in range(s):
            w, tag = ws[j * s + i], f"{j}" + (f"_{i}" if s > 1 else "")
            w3 = Signal.like(w, name=f"w{tag}_3")
            prod = Signal((w * xs[0][i]).shape(), name=f"prod{tag}")
            with m.If(runs[j * len(runs) // p]):
                m.d.sync += w3.eq(w)
                m.d.sync += prod.eq(sum_pairs(pair_terms(w3, ms[i]))[0])
            lane.append(prod)
        prods.append(lane)
    return prods


def total(terms: list[Value]) -> Value:
    """The terms summed, a balanced tree of adds."""
    while len(terms) > 1:
        terms = sum_pairs(terms)
    return Value.cast(terms[0])


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
