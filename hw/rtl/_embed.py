"""The ends of a sequence pipeline: the embedding that frames each sequence, and the read
of one token's row (`cosyn.ir.kinds.embed`).

`EmbedBlock` takes a sequence as its length L (1 to the most its position table allows
less the start token) then its L token ids, on one stream `i`. It offers L + 1 (the
start token included) on `n` for every sequence-level block downstream, then gives the
node's rows on `o`: the start token's, then one a token id, each `tokens[id, f] +
positions[p, f]` for f = 0 .. features - 1, an element a cycle (both tables read from
memories a cycle ahead of the sum). `TokenBlock` takes a sequence's token count on
`n`, passes row `index` of its input to `o` and drops the other rows.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out
from cosyn.hw.rtl._base import element_stream

from cosyn.ir.intervals import int_type_for_range
from cosyn.ir.kinds.embed import Embed, Token
from cosyn.ir.nodes import IntType

__all__ = ["EmbedBlock", "TokenBlock", "count_stream", "input_type"]


def count_stream(most: int) -> stream.Signature:
    """A stream of token counts up to `most`: one transfer a sequence."""
    return stream.Signature(range(most + 1))


def input_type(node: Embed, ids: IntType) -> IntType:
    """The type of `EmbedBlock`'s input elements: a token id of type `ids`, or a length."""
    most = len(node.positions) - (node.start is not None)
    return int_type_for_range(0, max(ids.hi, most))


class EmbedBlock(wiring.Component):
    """`node`'s rows for each sequence, framed by its token count (see the module doc).
    Members: `i` (In, lengths and ids of `input_type`), `n` (Out, `count_stream`: L + 1
    with a start token, else L), `o` (Out, element stream of `node.dtype`)."""

    def __init__(self, node: Embed, ids: IntType) -> None:
        self.node, self.in_type = node, input_type(node, ids)
        self.most = len(node.positions)
        super().__init__({
            "i": In(element_stream(self.in_type)),
            "n": Out(count_stream(self.most)),
            "o": Out(element_stream(node.dtype)),
        })  # fmt: skip

    def elaborate(self, platform) -> Module:
        m = Module()
        node = self.node
        tok, pos = (node.tokens.astype(int), node.positions.astype(int))
        feats = tok.shape[1]
        tables = []
        for name, t in (("tokens", tok), ("positions", pos)):
            bits = max(int(t.min()).bit_length(), int(t.max()).bit_length()) + 1
            mem = memory.Memory(shape=signed(bits), depth=t.size, init=t.reshape(-1).tolist())
            m.submodules[name] = mem
            tables.append(mem.read_port())
        rd_tok, rd_pos = tables

        start = node.start is not None
        left = Signal(range(self.most + 1))  # rows of this sequence still to start
        row_tok = Signal(range(tok.size))  # the row's first address in each table
        row_pos = Signal(range(pos.size))
        next_pos = Signal(range(pos.size + 1))  # the next id's row in the position table
        f = Signal(range(feats))
        active = Signal()  # a row is being read out
        n_valid = Signal()
        n_count = Signal(range(self.most + 1))
        m.d.comb += [self.n.valid.eq(n_valid), self.n.payload.eq(n_count)]
        with m.If(self.n.ready):
            m.d.sync += n_valid.eq(0)

        advance = ~self.o.valid | self.o.ready
        issue = active & advance
        m.d.comb += [
            rd_tok.en.eq(advance),
            rd_pos.en.eq(advance),
            rd_tok.addr.eq(row_tok + f),
            rd_pos.addr.eq(row_pos + f),
            self.o.payload.eq(rd_tok.data + rd_pos.data),
        ]
        with m.If(advance):
            m.d.sync += self.o.valid.eq(issue)

        last_f = f == feats - 1
        # a header when no sequence is open (and the last count has gone), else an id
        # when the current row's last element is issued or no row is open
        header = (left == 0) & ~active & (~n_valid | self.n.ready)
        want_id = (left != 0) & (~active | (issue & last_f))
        m.d.comb += self.i.ready.eq(header | want_id)
        take = self.i.valid & self.i.ready
        with m.If(issue):
            m.d.sync += f.eq(Mux(last_f, 0, f + 1))
            with m.If(last_f):
                m.d.sync += active.eq(0)
        with m.If(take & header):
            length = self.i.payload
            m.d.sync += [n_valid.eq(1), n_count.eq(length + start), left.eq(length)]
            m.d.sync += next_pos.eq(feats if start else 0)
            if start:  # the start token's row first, then L ids
                m.d.sync += [active.eq(1), f.eq(0), row_tok.eq(node.start * feats),
                             row_pos.eq(0)]  # fmt: skip
        with m.If(take & want_id):
            m.d.sync += [left.eq(left - 1), active.eq(1), f.eq(0),
                         row_tok.eq(self.i.payload * feats), row_pos.eq(next_pos),
                         next_pos.eq(next_pos + feats)]  # fmt: skip
        return m


class TokenBlock(wiring.Component):
    """Row `node.index` of each sequence of `features`-element rows (see the module doc).
    Members: `n` (In, `count_stream(most)`), `i` (In, element stream of `in_type`), `o`
    (Out, element stream of `node.dtype`)."""

    def __init__(self, node: Token, in_type: IntType, most: int) -> None:
        self.node, self.most = node, most
        super().__init__({
            "n": In(count_stream(most)),
            "i": In(element_stream(in_type)),
            "o": Out(element_stream(node.dtype)),
        })  # fmt: skip

    def elaborate(self, platform) -> Module:
        m = Module()
        feats = int(self.node.shape[0])
        rows = Signal(range(self.most + 1))  # rows of the sequence, 0: waiting for a count
        t = Signal(range(self.most))
        f = Signal(range(feats))
        keep = t == self.node.index
        space = ~self.o.valid | self.o.ready
        m.d.comb += [
            self.n.ready.eq(rows == 0),
            self.i.ready.eq((rows != 0) & (~keep | space)),
        ]
        with m.If(self.n.valid & self.n.ready):
            m.d.sync += [rows.eq(self.n.payload), t.eq(0), f.eq(0)]
        take = self.i.valid & self.i.ready
        with m.If(take & keep):
            m.d.sync += [self.o.valid.eq(1), self.o.payload.eq(self.i.payload)]
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(take):
            m.d.sync += f.eq(Mux(f == feats - 1, 0, f + 1))
            with m.If(f == feats - 1):
                m.d.sync += t.eq(t + 1)
                with m.If(t == rows - 1):
                    m.d.sync += rows.eq(0)
        return m
