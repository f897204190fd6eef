"""The sequence frontend: a `cosyn.models.Transformer` lowered to a graph of sequences.

fx cannot trace a transformer (its forward loops over a list of sequences of their own
lengths), so this walk reads its modules in the order its forward runs them, for one
sequence: the token ids are the graph's input (`Graph.sequence`: the first axis of every
value is the sequence's tokens), an `Embed` node puts the CLS token in front and adds
the quantized token and position rows, each encoder block is its attention
(`cosyn.ir.kinds.attention`), residual sums (`Add`), integer LayerNorms and feed-forward
layers, and a `Token` node reads the CLS token's row for the head: in the last block,
right at its attention, which computes the CLS query's row alone (`queries=1`), since
every layer after it works on each token alone. Every quantizer and
QuantLinear lowers through the same `Builder` as a traced model's, so the graph equals
the model bit for bit, at every length from 1 to max_len - 1 tokens.
"""

from __future__ import annotations

import torch

from cosyn.errors import UnsupportedLayerError
from cosyn.ir.builder import Builder, _Val
from cosyn.ir.graph import Graph
from cosyn.ir.intervals import int_type_for_range
from cosyn.ir.kinds.attention import attention, layer
from cosyn.ir.kinds.embed import Embed, Token
from cosyn.ir.kinds.gelu import gelu
from cosyn.ir.kinds.layernorm import layernorm
from cosyn.ir.lowering import MODELS
from cosyn.ir.nodes import Quantize
from cosyn.models.encoder import EncoderBlock, Transformer
from cosyn.models.intlayers import IntGELU, int_of

__all__ = ["lower_transformer"]


class _SequenceBuilder(Builder):
    """Values are named by their per-token shape itself (the walk knows it)."""

    sequence = True

    def __init__(self) -> None:
        super().__init__({})

    def value_shape(self, n: object) -> tuple[int, ...]:
        return tuple(n)  # type: ignore[arg-type]


def lower_transformer(model: Transformer, example_input: object = None) -> Graph:
    """The graph of `model` (in eval mode) for one sequence of token ids at a time."""
    if model.pooling != "cls":
        raise UnsupportedLayerError(
            "Transformer: mean pooling divides by the sequence's length in float, which no "
            "integer node of fixed constants does for every length; use pooling='cls'"
        )
    model.eval()
    b = _SequenceBuilder()
    dim = model.tok.embedding_dim
    one = torch.ones(())
    b.emit(Quantize(name="tokens", inputs=(), shape=(), dtype=int_type_for_range(0, model.vocab),
                    scale=one.numpy()), one)  # fmt: skip
    x = _embed(b, model, dim)
    last = len(model.blocks) - 1
    for i, block in enumerate(model.blocks):
        x = _block(b, block, x, dim, f"blocks.{i}", cls=i == last)
    if last < 0:
        x = _cls(b, x, dim, "cls")
    g = b.finish(layer(b, model.head, x, (model.head.out_features,), "head"))
    g.pooled = True
    return g


def _embed(b: Builder, model: Transformer, dim: int) -> _Val:
    """The token and position tables through the model's embedding quantizer, each entry
    on its own (in eval mode its scale is fixed), as `Transformer.embed` sums them."""
    with torch.no_grad():
        e = model.embed_quant(torch.cat([model.tok.weight, model.pos.weight]))
    if e.scale.numel() != 1:
        raise UnsupportedLayerError("Transformer.embed_quant: it must quantize per tensor")
    ints = int_of(e).numpy()
    rows = model.tok.num_embeddings
    scale = e.scale.detach().reshape(()).to(torch.float32)
    node = Embed.sized(
        b.in_ranges(("tokens",)), name="embed", inputs=("tokens",), shape=(dim,),
        scale=scale.numpy(), tokens=ints[:rows], positions=ints[rows:], start=model.vocab,
    )  # fmt: skip
    return b.emit(node, scale)


def _cls(b: Builder, x: _Val, dim: int, name: str) -> _Val:
    """The CLS token's row of x."""
    src = b.node(x.node)
    cls = Token(name=b.fresh(name, Token.kind), inputs=(x.node,), shape=(dim,),
                dtype=src.dtype, scale=src.scale)  # fmt: skip
    return b.emit(cls, x.scale)


def _block(b: Builder, block: EncoderBlock, x: _Val, dim: int, name: str, cls: bool) -> _Val:
    """h = LN1(x + Attn(x)); LN2(h + FF2(act(FF1(h)))), as `EncoderBlock.forward`; of the
    CLS token alone where `cls` (the last block: every layer after its attention works
    on each token alone, so the CLS row of the output is that of the CLS row's
    attention, over every key)."""
    token = (dim,)
    a = attention(b, block.attn, x, token, f"{name}.attn", queries=1 if cls else 0)
    if cls:
        x = _cls(b, x, dim, f"{name}.cls")
    h = layernorm(b, block.ln1, b.sum2(x, a, token, f"{name}.add1"), token, f"{name}.ln1")
    wide = (block.ff1.out_features,)
    f = layer(b, block.ff1, h, wide, f"{name}.ff1")
    if isinstance(block.act, IntGELU):
        f = gelu(b, block.act, f, wide, f"{name}.act")
    else:
        f = b.quantize(f, block.act.act_quant, wide, f"{name}.act")
    f = layer(b, block.ff2, f, token, f"{name}.ff2")
    return layernorm(b, block.ln2, b.sum2(h, f, token, f"{name}.add2"), token, f"{name}.ln2")


MODELS[Transformer] = lower_transformer
