"""The LayerNorm block: `intops.layernorm_ref` on each sample of F elements, exactly.

`COMPONENTS["layernorm"](node, ctx)` builds `LayerNormBlock`. Its timing and resources
are `perfmodel.layernorm` (`LayerNormTiming`, the cycle model of this control).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import memory, wiring
from cosyn.hw.rtl._base import COMPONENTS, Ctx, element_shape, ports, saturate
from cosyn.models.intops import round_shift
from cosyn.perfmodel.blocks import TIMINGS

from cosyn.ir.kinds.layernorm import LayerNorm

__all__ = ["LayerNormBlock"]

_IN, _VAR, _SQRT, _OUT = range(4)


class LayerNormBlock(wiring.Component):
    """o_j = saturate(round_shift(n_j gamma_j + beta_j, frac + gamma_frac - out_frac)),
    n_j = floor(((F x_j - s) << frac) / sigma), sigma = max(isqrt(F sum x^2 - s^2), 1),
    s = sum x, over the F elements of each sample (`LayerNorm.eval`).

    Members: `i` (In, element stream of `ctx.in_type`), `o` (Out, of `node.dtype`).
    IN stores the elements and sums them and their squares; VAR forms the variance;
    SQRT takes its root a bit a cycle (digit by digit: floor(sqrt v), which is what
    Newton's method in `isqrt_ref` reaches); OUT reads each element back, divides
    |(F x_j - s) << frac| by sigma a quotient bit a cycle (restoring division; a
    negative numerator's floor is minus the quotient, less one where a remainder is
    left), scales it (n gamma + beta), then rounds and saturates it into the output
    register.
    Timing: `cycles` (`perfmodel.layernorm.LayerNormTiming`).
    """

    def __init__(self, node: LayerNorm, ctx: Ctx) -> None:
        self.node, self.ctx = node, ctx
        self.cycles = TIMINGS[node.kind](node, ctx)
        super().__init__(ports(ctx, node.dtype))

    def elaborate(self, platform) -> Module:
        m = Module()
        spec, t = self.node.spec, self.cycles
        f, r_steps, b = t.f, t.r, t.b
        xt = self.ctx.in_type
        s_shape = signed((f << (xt.bits - 1)).bit_length() + 1)
        v_bits = spec.v_bits
        scale_shift = spec.frac + spec.gamma_frac - spec.out_frac  # z's to the output's

        m.submodules.xs = xs = memory.Memory(shape=element_shape(xt), depth=f, init=[])
        m.submodules.gamma = gm = memory.Memory(
            shape=signed(spec.gamma_bits), depth=f, init=[int(g) for g in self.node.gamma]
        )
        m.submodules.beta = bm = memory.Memory(
            shape=signed(spec.z_bits), depth=f, init=[int(v) for v in self.node.beta])  # fmt: skip
        wr, rd, g_rd, b_rd = xs.write_port(), xs.read_port(), gm.read_port(), bm.read_port()

        state = Signal(range(4))
        pos = Signal(range(f + 1))
        cnt = Signal(range(max(r_steps, t.step) + 1))
        total, squares = Signal(s_shape), Signal(unsigned(2 * xt.bits + f.bit_length()))
        var, root, rest = Signal(2 * r_steps), Signal(v_bits), Signal(v_bits + 1)
        sigma = Signal(v_bits)
        num, neg, quot, rem = Signal(b), Signal(), Signal(b), Signal(v_bits + 1)
        gamma, beta = Signal(signed(spec.gamma_bits)), Signal(signed(spec.z_bits))
        z = Signal(signed(spec.z_bits + 1))
        full, out = Signal(), Signal(element_shape(self.node.dtype))
        m.d.comb += [self.o.valid.eq(full), self.o.payload.eq(out)]
        m.d.comb += [rd.addr.eq(pos), g_rd.addr.eq(pos), b_rd.addr.eq(pos)]
        taken = full & self.o.ready
        with m.If(taken):
            m.d.sync += full.eq(0)

        x = self.i.payload
        m.d.comb += [self.i.ready.eq(state == _IN), wr.addr.eq(pos), wr.data.eq(x)]
        with m.Switch(state):
            with m.Case(_IN), m.If(self.i.valid):
                m.d.comb += wr.en.eq(1)
                first = pos == 0
                m.d.sync += [
                    total.eq(Mux(first, 0, total) + x),
                    squares.eq(Mux(first, 0, squares) + x * x),
                    pos.eq(pos + 1),
                ]
                with m.If(pos == f - 1):
                    m.d.sync += [state.eq(_VAR), pos.eq(0)]
            with m.Case(_VAR):
                m.d.sync += [var.eq(f * squares - total * total), root.eq(0), cnt.eq(0),
                             state.eq(_SQRT)]  # fmt: skip
                m.d.sync += rest.eq(0)
            with m.Case(_SQRT):
                # digit by digit: bring down v's next two bits, try root bit 2 root + 1
                window = Signal(v_bits + 3)
                m.d.comb += window.eq((rest << 2) | var[-2:])
                trial = Signal(v_bits + 3)
                m.d.comb += trial.eq((root << 2) | 1)
                with m.If(window >= trial):
                    m.d.sync += [rest.eq(window - trial), root.eq((root << 1) | 1)]
                with m.Else():
                    m.d.sync += [rest.eq(window), root.eq(root << 1)]
                m.d.sync += [var.eq(var << 2), cnt.eq(cnt + 1)]
                with m.If(cnt == r_steps - 1):
                    m.d.sync += [state.eq(_OUT), cnt.eq(0)]
            with m.Case(_OUT):
                with m.If(cnt == 0):  # the element, gamma and beta are read
                    m.d.sync += [sigma.eq(Mux(root == 0, 1, root)), cnt.eq(1)]
                with m.Elif(cnt == 1):  # load the numerator's magnitude
                    y = Signal(signed(s_shape.width + f.bit_length() + 1))
                    m.d.comb += y.eq(f * rd.data - total)
                    m.d.sync += [num.eq(Mux(y < 0, -y, y) << spec.frac), neg.eq(y < 0),
                                 quot.eq(0), rem.eq(0), gamma.eq(g_rd.data),
                                 beta.eq(b_rd.data), cnt.eq(2)]  # fmt: skip
                with m.Elif(cnt < b + 2):  # a quotient bit, the numerator's MSB first
                    shifted = Signal(v_bits + 2)
                    m.d.comb += shifted.eq((rem << 1) | num[b - 1])
                    fits = shifted >= sigma
                    m.d.sync += [rem.eq(Mux(fits, shifted - sigma, shifted)),
                                 quot.eq((quot << 1) | fits), num.eq(num << 1),
                                 cnt.eq(cnt + 1)]  # fmt: skip
                with m.Elif(cnt == b + 2):  # the quotient's floor, scaled
                    n = Signal(signed(b + 2))
                    m.d.comb += n.eq(Mux(neg, -quot - (rem != 0), quot))
                    m.d.sync += [z.eq(n * gamma + beta), cnt.eq(cnt + 1)]
                with m.Elif(~full | taken):  # rounded and saturated into the output register
                    m.d.sync += [out.eq(saturate(round_shift(z, scale_shift), spec.out_bits)),
                                 full.eq(1), cnt.eq(0), pos.eq(pos + 1)]  # fmt: skip
                    with m.If(pos == f - 1):
                        m.d.sync += [state.eq(_IN), pos.eq(0)]
        return m


def _layernorm(node: LayerNorm, ctx: Ctx) -> LayerNormBlock:
    return LayerNormBlock(node, ctx)


COMPONENTS[LayerNorm.kind] = _layernorm
