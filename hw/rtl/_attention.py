"""The attention block: one sequence at a time, a product a cycle (`perfmodel.attention`).

Ports: `n` (In, the sequence's length L: one transfer a sequence), `q`, `k`, `v` (In,
element streams of L * dim integers each, token-major, as the graph's Q, K and V
nodes give them) and `o` (Out, the node's L * dim integers in the same order; of its
first `queries` rows where the node sets them: the rows after are not computed). The
three inputs are stored (a memory each, max_len * dim words); then, per query i and
head h, the block computes what `Attention.eval` does, exactly:
  SCORE  s_c = q_i,h . k_key(c),h for each slot c (`AttentionTiming.slots`), a product
         a cycle, and the row's maximum over the slots that hold a key of its pattern;
  EXP    e_c = i-exp((s_c - max) >> shift) as `intops.softmax_ref` (0 for other slots),
         their sum;
  DIV    factor = 2^m // sum, restoring division, a quotient bit a cycle;
  SUM    out_i,h,d = sum over c of ((e_c * factor) >> (m - out_bits)) * v_key(c),h,d.
A window row's slots are the n_global globals, then keys i - window .. i + window; a
slot holds a key where it is in the sequence and, past the globals, not one of them
(`models.attention.window_table`'s rule). A full row (dense, or a global query) has the
L keys. A top-k row first ranks every key by its low-bit score (RANK, `rank_scores`)
and chooses the min(k, L) best (SELECT: a pass over the scores per choice, of equal
scores the lower key, as `topk_table`); its slots are the chosen keys. The output
register holds a result the consumer has not taken; SUM waits for it (the other phases
run on).
"""

from __future__ import annotations

from amaranth.hdl import Array, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out
from cosyn.hw.rtl._base import element_shape, element_stream, saturate
from cosyn.models.intops import round_shift, signed_bits
from cosyn.perfmodel.attention import EXP_STAGES, AttentionTiming

from cosyn.ir.kinds.attention import Attention
from cosyn.ir.nodes import IntType

__all__ = ["AttentionBlock"]

_LEN, _RECV, _SCORE, _EXP, _DIV, _SUM, _RANK, _SELECT, _WAIT, _RWAIT = range(10)


class AttentionBlock(wiring.Component):
    """The attention of `node` (dense, window + global or top-k) for inputs of `in_types`
    (Q, K, V); see the module doc. Timing: `cycles` (`perfmodel.attention.AttentionTiming`)."""

    def __init__(self, node: Attention, in_types: tuple[IntType, IntType, IntType]) -> None:
        self.node, self.in_types = node, in_types
        self.cycles = AttentionTiming(node)
        super().__init__({
            "n": In(stream.Signature(range(node.max_len + 1))),
            **{p: In(element_stream(t)) for p, t in zip("qkv", in_types, strict=True)},
            "o": Out(element_stream(node.dtype)),
        })  # fmt: skip

    def elaborate(self, platform) -> Module:
        m = Module()
        a, spec = self.node, self.node.spec
        dim, heads, lmax = int(a.shape[0]), a.heads, a.max_len
        dh = dim // heads
        tq, tk = self.in_types[:2]
        top = dh * max(-tq.lo, tq.hi) * max(-tk.lo, tk.hi)
        s_shape = signed(signed_bits(-top, top))
        most = max(lmax, a.n_global + 2 * a.window + 1)  # slots of a row

        mems = {p: memory.Memory(shape=element_shape(t), depth=lmax * dim, init=[])
                for p, t in zip("qkv", self.in_types, strict=True)}  # fmt: skip
        slots = memory.Memory(shape=signed(max(s_shape.width, spec.e_bits + 1)), depth=most,
                              init=[])  # fmt: skip
        for p, mem in mems.items():
            m.submodules[f"{p}_mem"] = mem
        m.submodules.slots = slots
        reads = {p: mems[p].read_port() for p in "qkv"}
        writes = {p: mems[p].write_port() for p in "qkv"}
        s_wr = slots.write_port()
        s_rd = slots.read_port(transparent_for=(s_wr,))  # a row of one slot reads its write

        state = Signal(range(10))
        length = Signal(range(lmax + 1))
        total = Signal(range(lmax * dim + 1))
        m.d.comb += total.eq(length * dim)

        # LEN, RECV: the length, then Q, K and V stored as they arrive, each at its count.
        counts = {p: Signal(range(lmax * dim + 1), name=f"{p}_count") for p in "qkv"}
        go = Signal()  # below: everything waits while the output register's next result does
        m.d.comb += self.n.ready.eq((state == _LEN) & go)
        for p in "qkv":
            port, cnt = getattr(self, p), counts[p]
            m.d.comb += [
                port.ready.eq((state == _RECV) & (cnt < total)),
                writes[p].addr.eq(cnt),
                writes[p].data.eq(port.payload),
                writes[p].en.eq(port.valid & port.ready),
            ]
            with m.If(port.valid & port.ready):
                m.d.sync += cnt.eq(cnt + 1)

        # The row (query i, head h), its slot c and feature d; what each slot holds.
        i, h = Signal(range(lmax)), Signal(range(heads))
        c, d = Signal(range(most)), Signal(range(dh))
        n_slots = Signal(range(most + 1))
        ranking = state == _RANK
        if a.pattern == "topk":  # the keys chosen by SELECT, best first
            chosen = [Signal(range(lmax), name=f"chosen{j}") for j in range(min(a.k, lmax))]
            key, ok = Array(chosen)[c], Const(1)
            m.d.comb += n_slots.eq(Mux(length < a.k, length, a.k))
        else:
            full = Signal()
            m.d.comb += full.eq(1 if a.pattern == "dense" else i < a.n_global)
            m.d.comb += n_slots.eq(Mux(full, length, a.n_global + 2 * a.window + 1))
            key, ok = _slot(m, c, i, length, full, a.n_global, a.window, most)
        last_c = c == n_slots - 1
        at = Mux(ranking, c, Mux(ok, key, 0)) * dim + h * dh + d  # RANK reads every key
        m.d.comb += [
            reads["q"].addr.eq(i * dim + h * dh + d),
            reads["k"].addr.eq(at),
            reads["v"].addr.eq(at),
            s_rd.addr.eq(c),
        ]

        # The data stage: what the previous cycle issued (memories read in one cycle).
        live, p_ok, p_first, p_last = (
            Signal(name=f"p_{n}") for n in ("live", "ok", "first", "last")
        )
        p_state, p_c = Signal(range(10)), Signal(range(most))
        acc = Signal(signed(max(s_shape.width, a.dtype.bits)))  # SCORE's
        row_max = Signal(s_shape)
        e_sum = Signal(spec.sum_bits + 1)
        factor = Signal(spec.m + 1)
        rem = Signal(spec.sum_bits + 2)
        bit = Signal(range(spec.m + EXP_STAGES + 1))
        out_full, out_val = Signal(), Signal(element_shape(a.dtype))
        m.d.comb += [self.o.valid.eq(out_full), self.o.payload.eq(out_val)]
        # SUM's second stage (p * v into the sum) holds a result: the output register's next
        y_live, y_first, y_last = Signal(), Signal(), Signal()
        m.d.comb += go.eq(~(y_live & y_last & out_full & ~self.o.ready))
        for r in (*reads.values(), s_rd):
            m.d.comb += r.en.eq(go)

        # SCORE: q * k registered, then summed; a slot's score stored, the row's maximum kept
        prod = Signal(signed(self.in_types[0].bits + self.in_types[1].bits))
        x_live, x_ok, x_first, x_last = Signal(), Signal(), Signal(), Signal()
        x_c = Signal.like(p_c)
        with m.If(go):
            m.d.sync += [prod.eq(reads["q"].data * reads["k"].data),
                         x_live.eq(live & (p_state == _SCORE)), x_ok.eq(p_ok),
                         x_first.eq(p_first), x_last.eq(p_last), x_c.eq(p_c)]  # fmt: skip
        score = Signal(acc.shape())
        m.d.comb += score.eq(Mux(x_first, 0, acc) + prod)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += out_full.eq(0)
        with m.If(go & x_live):
            m.d.sync += acc.eq(score)
            with m.If(x_last):
                best = Mux(x_ok, score, -(1 << (s_shape.width - 1)))
                m.d.comb += [s_wr.addr.eq(x_c), s_wr.data.eq(score), s_wr.en.eq(1)]
                m.d.sync += row_max.eq(Mux((x_c == 0) | (best > row_max), best, row_max))
        exp_in = (live & (p_state == _EXP), p_ok, p_c, p_first)
        e, e_live, (e_ok, e_c, e_first) = _iexp(
            m, go, exp_in, s_rd.data[: s_shape.width].as_signed(), row_max, spec
        )
        with m.If(go & e_live):
            kept = Mux(e_ok, e, 0)
            m.d.comb += [s_wr.addr.eq(e_c), s_wr.data.eq(kept), s_wr.en.eq(1)]
            m.d.sync += e_sum.eq(Mux(e_first, 0, e_sum) + kept)

        # SUM: p = (e * factor) >> (m - out_bits) and v registered, then p * v summed
        p, v = Signal(spec.out_bits + 1), Signal.like(reads["v"].data)
        out_acc = Signal(acc.shape())
        e_stored = s_rd.data.as_unsigned()[: spec.e_bits]
        term = Signal(acc.shape())
        m.d.comb += term.eq(Mux(y_first, 0, out_acc) + p.as_signed() * v)
        with m.If(go):
            m.d.sync += [y_live.eq(live & (p_state == _SUM)), y_first.eq(p_first),
                         y_last.eq(p_last), v.eq(reads["v"].data),
                         p.eq((e_stored * factor) >> (spec.m - spec.out_bits))]  # fmt: skip
            with m.If(y_live):
                m.d.sync += out_acc.eq(term)
                with m.If(y_last):
                    m.d.sync += [out_full.eq(1), out_val.eq(term)]

        row = _RANK if a.pattern == "topk" else _SCORE  # a row's first phase

        def issue(first, last) -> None:
            """Register this cycle's read for the data stage."""
            m.d.sync += [live.eq(1), p_state.eq(state), p_c.eq(c), p_ok.eq(ok),
                         p_first.eq(first), p_last.eq(last)]  # fmt: skip

        def next_row() -> None:
            """After a row's SUM: the next head, the next query, or the next sequence."""
            with m.If(h == heads - 1):
                m.d.sync += h.eq(0)
                last_query = i == length - 1
                if a.queries:  # only the first queries' rows
                    last_query |= i == a.queries - 1
                with m.If(last_query):
                    m.d.sync += state.eq(_LEN)
                with m.Else():
                    m.d.sync += [i.eq(i + 1), state.eq(row)]
            with m.Else():
                m.d.sync += [h.eq(h + 1), state.eq(row)]

        with m.If(go):
            m.d.sync += live.eq(0)
            with m.Switch(state):
                with m.Case(_LEN), m.If(self.n.valid):
                    m.d.sync += [length.eq(self.n.payload), state.eq(_RECV)]
                    m.d.sync += [counts[p].eq(0) for p in "qkv"]
                with m.Case(_RECV), m.If(sum(counts[p] == total for p in "qkv") == 3):
                    m.d.sync += [state.eq(row), i.eq(0), h.eq(0), c.eq(0), d.eq(0)]
                with m.Case(_SCORE):  # c outer, d inner: a score every dh cycles
                    issue(d == 0, d == dh - 1)
                    with m.If(d == dh - 1):
                        m.d.sync += [d.eq(0), c.eq(c + 1)]
                        with m.If(last_c):
                            m.d.sync += [c.eq(0), state.eq(_WAIT)]
                    with m.Else():
                        m.d.sync += d.eq(d + 1)
                with m.Case(_WAIT):  # the last score is summed, stored and compared
                    m.d.sync += state.eq(_EXP)
                with m.Case(_EXP):
                    issue(c == 0, last_c)
                    m.d.sync += c.eq(c + 1)
                    with m.If(last_c):
                        m.d.sync += [c.eq(0), bit.eq(0), state.eq(_DIV)]
                with m.Case(_DIV):  # EXP_STAGES cycles for the sum's last term; m + 1 bits
                    shifted = Signal(rem.shape())
                    m.d.comb += shifted.eq((rem << 1) | (bit == EXP_STAGES))
                    with m.If(bit < EXP_STAGES):
                        m.d.sync += [rem.eq(0), factor.eq(0)]
                    with m.Elif(shifted >= e_sum):
                        m.d.sync += [rem.eq(shifted - e_sum), factor.eq((factor << 1) | 1)]
                    with m.Else():
                        m.d.sync += [rem.eq(shifted), factor.eq(factor << 1)]
                    m.d.sync += bit.eq(bit + 1)
                    with m.If(bit == spec.m + EXP_STAGES):
                        m.d.sync += [c.eq(0), d.eq(0), state.eq(_SUM)]
                with m.Case(_SUM):  # d outer, c inner: an output every n_slots cycles
                    issue(c == 0, last_c)
                    m.d.sync += c.eq(c + 1)
                    with m.If(last_c):
                        m.d.sync += [c.eq(0), d.eq(d + 1)]
                        with m.If(d == dh - 1):
                            m.d.sync += d.eq(0)
                            next_row()
        if a.pattern == "topk":
            stage = (live, p_state, p_c, p_first, p_last)
            self._choose(m, reads, state, (c, d, length, n_slots), chosen, issue, stage, go)
        return m

    def _choose(self, m, reads, state, counters, chosen, issue, stage, go) -> None:
        """RANK and SELECT (top-k): per key j, the low-bit score q_lo . k_lo (`rank_scores`:
        Q and K rounded to rank_bits) a product a cycle; then C passes over the L scores,
        each taking the best left (strictly greater: of equal scores the lower key) into
        `chosen` and marking it below every score."""
        a = self.node
        c, d, length, n_slots = counters
        live, p_state, p_c, p_first, p_last = stage
        dh = int(a.shape[0]) // a.heads
        low = 1 << (a.rank_bits - 1)
        r_shape = signed(signed_bits(-dh * low * (low - 1), dh * low * low) + 1)
        below = -(1 << (r_shape.width - 1))  # under every score: a key already chosen
        m.submodules.ranks = ranks = memory.Memory(shape=r_shape, depth=a.max_len, init=[])
        r_wr = ranks.write_port()
        r_rd = ranks.read_port(transparent_for=(r_wr,))
        m.d.comb += [r_rd.addr.eq(c), r_rd.en.eq(go)]
        acc, best = Signal(r_shape), Signal(r_shape)
        best_j, taken = Signal(range(a.max_len)), Signal(range(len(chosen) + 1))
        draining = Signal()

        shift = a.act_bits - a.rank_bits  # rank_scores: saturate(round_shift(v, shift), rank_bits)
        lows = [saturate(round_shift(reads[p].data, shift), a.rank_bits) for p in "qk"]
        prod, x_live, x_first, x_last = Signal(r_shape), Signal(), Signal(), Signal()
        x_c = Signal.like(p_c)
        with m.If(go):  # the product registered, then summed (as SCORE's)
            m.d.sync += [prod.eq(lows[0] * lows[1]), x_live.eq(live & (p_state == _RANK)),
                         x_first.eq(p_first), x_last.eq(p_last), x_c.eq(p_c)]  # fmt: skip
        score = Signal(r_shape)
        m.d.comb += score.eq(Mux(x_first, 0, acc) + prod)
        better = p_first | (r_rd.data > best)
        new_j = Mux(better, p_c, best_j)
        with m.If(go & x_live):
            m.d.sync += acc.eq(score)
            with m.If(x_last):
                m.d.comb += [r_wr.addr.eq(x_c), r_wr.data.eq(score), r_wr.en.eq(1)]
        with m.If(go & live & (p_state == _SELECT)):
            m.d.sync += [best.eq(Mux(better, r_rd.data, best)), best_j.eq(new_j)]
            with m.If(p_last):
                m.d.comb += [r_wr.addr.eq(new_j), r_wr.data.eq(below), r_wr.en.eq(1)]
                m.d.sync += [Array(chosen)[taken].eq(new_j), taken.eq(taken + 1)]

        with m.If(go & (state == _RANK)):  # key j (c) outer, d inner
            issue(d == 0, d == dh - 1)
            m.d.sync += d.eq(d + 1)
            with m.If(d == dh - 1):
                m.d.sync += [d.eq(0), c.eq(c + 1)]
                with m.If(c == length - 1):
                    m.d.sync += [c.eq(0), taken.eq(0), state.eq(_RWAIT)]
        with m.If(go & (state == _RWAIT)):  # the last low-bit score is summed and stored
            m.d.sync += state.eq(_SELECT)
        with m.If(go & (state == _SELECT)):
            with m.If(draining):  # the last pass's choice is made this cycle
                m.d.sync += [draining.eq(0), c.eq(0), d.eq(0), state.eq(_SCORE)]
            with m.Else():
                issue(c == 0, c == length - 1)
                m.d.sync += c.eq(c + 1)
                with m.If(c == length - 1):
                    m.d.sync += c.eq(0)
                    with m.If(taken == n_slots - 1):
                        m.d.sync += draining.eq(1)


def _slot(m: Module, c: Signal, i: Signal, length: Signal, full, n_global: int, window: int,
          lmax: int):  # fmt: skip
    """The key of slot c of query i, and whether the slot holds one (see the module doc)."""
    key = Signal(signed(lmax.bit_length() + 2))
    ok = Signal()
    at = Signal(key.shape())
    m.d.comb += at.eq(i + c)  # as a signed value: near may be negative
    near = at - (window + n_global)
    m.d.comb += key.eq(Mux(full | (c < n_global), c, near))
    m.d.comb += ok.eq(Mux(full, 1, Mux(c < n_global, c < length,
                                       (key >= n_global) & (key < length))))  # fmt: skip
    return key, ok


def _iexp(m: Module, go, tags, s, top, spec):
    """e = i-exp((s - top) >> shift) as `intops.softmax_ref` (s <= top), in EXP_STAGES
    stages from the cycle s is read: the clamped difference; its quotient by x0; the
    rest r; r (r + b) + c; the shift by the quotient. `tags` (valid, then values that ride
    along) enter with s; every stage advances while `go`. Returns e, whether its stage holds
    one, and the tags with it."""
    valid, *rest = tags
    floor = spec.n * spec.x0
    diff = Signal(signed(s.shape().width + 1))
    m.d.comb += diff.eq((s - top) >> spec.shift)
    stages: list[int] = []

    def stage(values, now):
        n = len(stages)
        stages.append(n)
        regs = [Signal.like(Value.cast(v), name=f"exp{n}_{k}") for k, v in enumerate(values)]
        live = Signal(name=f"exp{n}_live")
        with m.If(go):
            m.d.sync += [live.eq(now)] + [r.eq(v) for r, v in zip(regs, values, strict=True)]
        return live, regs

    dd = Mux(diff < floor, floor, diff)
    live, (d1, *t1) = stage([dd, *rest], valid)
    q = sum((d1 <= j * spec.x0).as_unsigned() for j in range(1, spec.n + 1))
    live, (q2, d2, *t2) = stage([Value.cast(q)[: spec.n.bit_length()], d1, *t1], live)
    r_shape = signed(diff.shape().width + 1)
    r = (d2 - spec.x0 * q2)[: r_shape.width].as_signed()
    live, (q3, r3, *t3) = stage([q2, r, *t2], live)
    live, (q4, p4, *t4) = stage([q3, r3 * (r3 + spec.b) + spec.c, *t3], live)
    e = Signal(unsigned(spec.e_bits))
    m.d.comb += e.eq(p4 >> q4)
    return e, live, t4
