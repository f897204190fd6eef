"""The multiply-accumulate lanes that dense and conv2d share, and their output register.

`MacLanes` is everything behind a block's issue stage: the stages of
`perfmodel.mac` (read, register, multiply, accumulate), each about one primitive deep,
and the output register of P results with its head slot. The block drives `issue`,
`first` and `last` for the term it issues (the memories it reads are enabled while
not `stall`) and hands over the term's data as the memories return it.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, Value
from cosyn.hw.rtl._mul import copy_init, products, total
from cosyn.perfmodel.mac import mac_stages
from cosyn.perfmodel.resources import copies

__all__ = ["MacLanes"]


class MacLanes:
    """P lanes: acc_j = bias_j + sum over a group's terms of w_j * x, then out.

    Build with the issue stage's conditions (`issue`, `first`, `last`: values of the
    cycle a term is issued), its group index `group` (a Signal) and whether it is the
    block's last (`final`, where that group's results are `short`, fewer than P: only
    its first `short` results are loaded), the output stream `o` and the accumulator
    shape; then `datapath(m, x, ws, bias_port, bs)` with the term's
    element `x` and P weights `ws` as the read ports return them (stage 1) and the
    bias ROM's read port and fields (addressed here, read at stage 3).

    `stall` (a register) is high while a group's results wait for the output register;
    the issue stage and every memory read must hold then. Only the control reads it: the
    lanes and the weight ROMs hold on copies of their own (`runs`, run = not stall, each
    steering its share), so the control's loop does not pass through the net that
    enables every register of the lanes.
    """

    def __init__(self, p: int, acc_shape, o, short: int | None = None, simd: int = 1) -> None:
        self.p, self.acc_shape, self.o, self.simd = p, acc_shape, o, simd
        self.short = p if short is None else short
        self.stages = n = mac_stages(simd)
        self.stall = Signal()
        # the lanes' copies, kept apart from stall (and from each other) by synthesis: a
        # register holding run, and its two factors in registers of their own
        self._run = Signal(init=1, name="run")
        self._done, self._two = Signal(name="stall_done"), Signal(name="stall_two")
        self.runs = [self._run, ~(self._done & self._two)][: copies(p)]
        self.v = [Signal(name=f"v{k + 1}") for k in range(n)]
        self.first = [Signal(name=f"first{k + 1}") for k in range(n - 1)]
        self.last = [Signal(name=f"last{k + 1}") for k in range(n)]
        self.fin = [Signal(name=f"fin{k + 1}") for k in range(n)] if self.short < p else None

    def control(self, m: Module, issue, first, last, group: Signal, final=0) -> None:
        """The flags of each stage (first, last and fin only with a term), and the group
        index (for the bias read) to the accumulate's stage less two."""
        run = ~self.stall
        v, fst, lst, fin = self.v, self.first, self.last, self.fin
        n = self.stages  # the bias is read at stage n - 2, for the accumulate at stage n
        gs = [Signal.like(group, name=f"group{k + 1}") for k in range(n - 2)]
        self.bias_group = gs[-1]
        with m.If(run):
            m.d.sync += [v[0].eq(issue), fst[0].eq(issue & first), lst[0].eq(issue & last)]
            m.d.sync += [v[k].eq(v[k - 1]) for k in range(1, n)]
            m.d.sync += [lst[k].eq(lst[k - 1]) for k in range(1, n)]
            m.d.sync += [fst[k].eq(fst[k - 1]) for k in range(1, n - 1)]
            m.d.sync += [gs[0].eq(group)] + [gs[k].eq(gs[k - 1]) for k in range(1, n - 2)]
            if fin is not None:
                m.d.sync += fin[0].eq(issue & last & final)
                m.d.sync += [fin[k].eq(fin[k - 1]) for k in range(1, n)]

    def datapath(
        self, m: Module, x: Value, ws: list[Value], bias_port, bs: list[Value], block: bool
    ) -> None:
        """Stage 2 to the accumulate, and the output register; `x` is the term's element,
        or with SIMD its S elements (a list), and `ws` P weights, or P*S (lane j's S in a
        row). Every register of lane j is enabled by its copy of `runs` alone (a
        register's output); a stage without a term carries a zero element, so its
        products are zero. With `block` (the weights read from block
        RAM) the weights' registers have no reset and share the ROMs' enable `runs[0]`,
        so the flow moves them into the blocks' output registers."""
        p, runs = self.p, self.runs
        m.d.comb += [bias_port.addr.eq(self.bias_group), bias_port.en.eq(~self.stall)]
        x = [Value.cast(e) for e in (x if isinstance(x, (list, tuple)) else [x])]
        s = len(x)  # SIMD: lane j multiplies the S elements by its weights ws[j*S : j*S+S]
        xs = [
            [Signal(e.shape(), name=f"x{k}" + (f"_{i}" if s > 1 else ""),
                    init=copy_init(k, e.shape())) for i, e in enumerate(x)]
            for k in range(copies(p))
        ]  # fmt: skip
        wr = [
            Signal(Value.cast(w).shape(), name=f"w{j}", reset_less=block) for j, w in enumerate(ws)
        ]
        for c, run in zip(xs, runs, strict=True):
            with m.If(run):
                m.d.sync += [r.eq(Mux(self.v[0], e, 0)) for r, e in zip(c, x, strict=True)]
        prods = self._sums(m, products(m, xs, wr, runs))
        accs = [Signal(self.acc_shape, name=f"acc{j}") for j in range(p)]
        for j in range(p):
            run = runs[j * len(runs) // p]
            # the registers behind one block share its enable (`hw/fpga/_outreg`)
            with m.If(runs[0] if block else run):
                m.d.sync += [wr[j * s + i].eq(ws[j * s + i]) for i in range(s)]
            with m.If(run):  # partial sums wrap modulo 2**bits; the full sum fits
                m.d.sync += accs[j].eq(Mux(self.first[-1], bs[j], accs[j]) + prods[j])
        self._output(m, accs)

    def _sums(self, m: Module, prods: list[list[Signal]]) -> list[Value]:
        """Each lane's product (stage 4), or with SIMD its S products summed into a
        register of their own (stage 5, a tree of adds)."""
        if self.simd == 1:
            return [lane[0] for lane in prods]
        sums = []
        for j, lane in enumerate(prods):
            t = total(lane)
            r = Signal(t.shape(), name=f"sum{j}")
            with m.If(self.runs[j * len(self.runs) // self.p]):
                m.d.sync += r.eq(t)
            sums.append(r)
        return sums

    def _output(self, m: Module, accs: list[Signal]) -> None:
        """A two-entry queue on offer (`q`, `cnt` entries) and the results loaded behind
        it in a shift register (`outs`, valid bits `ov`); `perfmodel.mac`'s `left` counts
        both. A load needs at most one result waiting; result 0 goes straight to the
        queue, the rest to `outs`. `outs` shifts into the queue while it holds at most
        one: its enables are functions of registers, only the queue follows the
        consumer's ready. `stall` and its copies are registers: next cycle's `done` and
        "two or more wait", computed this cycle; so are the queue's own enables, `fill`
        (a result comes in: a load or a shift) and `pick` (it is result 0), so that no
        path from `stall`, whose fanout is the whole control, reaches the queue."""
        p, o = self.p, self.o
        outs = [Signal(self.acc_shape, name=f"out{j}") for j in range(p - 1)]
        ov = [Signal(name=f"out{j}_valid") for j in range(p - 1)]
        q = [Signal(self.acc_shape, name=f"q{k}") for k in range(2)]
        cnt = Signal(range(3))
        fill, pick = Signal(name="fill"), Signal(name="pick")
        m.d.comb += [o.valid.eq(cnt != 0), o.payload.eq(q[0])]
        take = o.valid & o.ready
        load = fill & pick if p > 1 else fill  # = last[-1] & ~stall
        shift = fill & ~pick if p > 1 else 0  # outs[0] valid, the queue not full, no load
        # the queue: drop the head when taken, append result 0 or the head of outs
        incoming = Mux(pick, accs[0], outs[0]) if p > 1 else accs[0]
        pos = cnt - take  # where an incoming result goes
        with m.If(take):
            m.d.sync += q[0].eq(q[1])
        with m.If(fill):
            with m.If(pos == 0):
                m.d.sync += q[0].eq(incoming)
            with m.Else():
                m.d.sync += q[1].eq(incoming)
        cnt_next = cnt - take + fill
        m.d.sync += cnt.eq(cnt_next)
        # a load of the final group's results (`lfin`, decided with `fill`) leaves
        # short - 1 of them in outs, another load P - 1
        lfin, loaded = None, p > 1
        if self.fin is not None:
            lfin = Signal(name="load_fin")
            m.d.sync += lfin.eq(Mux(self.stall, self.fin[-1], self.fin[-2]))
            loaded = Mux(lfin, self.short > 1, p > 1)
        # two or more wait next cycle: the queue's and those still in outs
        rest = Mux(shift, ov[1] if p > 2 else 0, ov[0] if p > 1 else 0)
        two_next = Mux(load, loaded | (cnt_next == 2), (cnt_next == 2) | ((cnt_next == 1) & rest))
        done_next = Mux(self.stall, self.last[-1], self.last[-2])
        stall_next = done_next & two_next
        load_next = done_next & ~two_next
        m.d.sync += [self.stall.eq(stall_next), self._run.eq(~stall_next)]
        if len(self.runs) > 1:
            m.d.sync += [self._done.eq(done_next), self._two.eq(two_next)]
        if p > 1:
            ov0_next = Mux(load, loaded, Mux(shift, ov[1] if p > 2 else 0, ov[0]))
            shift_next = ov0_next & (cnt_next != 2) & ~load_next
            # pick differs from load_next only where nothing comes in; written so that
            # synthesis does not merge it with `_outs`' load registers
            m.d.sync += [fill.eq(load_next | shift_next), pick.eq(done_next & ~shift_next)]
            self._outs(m, accs, outs, ov, load_next, shift_next, lfin)
        else:
            m.d.sync += fill.eq(load_next)

    def _outs(self, m: Module, accs, outs, ov, load_next, shift_next, lfin) -> None:
        """The shift register behind the queue: load (the group's results but the first)
        or shift, each decided a cycle ahead into registers of its own, in `copies`
        (an odd copy holds the complement, so synthesis keeps them apart), each copy
        steering its share of the lanes: no logic between those registers and the
        lanes' multiplexers. A load of the final group's results (`lfin`) marks those
        beyond `short` invalid."""
        p = self.p
        k = copies(p - 1)
        lds = [Signal(name=f"load{c}", init=c % 2) for c in range(k)]
        shs = [Signal(name=f"shift{c}", init=c % 2) for c in range(k)]
        m.d.sync += [r.eq(load_next ^ (c % 2)) for c, r in enumerate(lds)]
        m.d.sync += [r.eq(shift_next ^ (c % 2)) for c, r in enumerate(shs)]
        for j in range(p - 1):
            c = j * k // (p - 1)
            load, shift = lds[c] ^ (c % 2), shs[c] ^ (c % 2)
            with m.If(load):
                m.d.sync += [outs[j].eq(accs[j + 1]), ov[j].eq(~lfin if j + 1 >= self.short else 1)]
            with m.Elif(shift):  # the last keeps its (now invalid) result
                if j < p - 2:
                    m.d.sync += outs[j].eq(outs[j + 1])
                m.d.sync += ov[j].eq(ov[j + 1] if j < p - 2 else 0)
