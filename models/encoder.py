"""A quantized transformer encoder over variable-length token sequences.

Tokens of all sequences are packed one after another (no padding): position-wise
layers (embedding, projections, feed-forward, LayerNorm) run on the packed tokens,
SparseAttention on each sequence alone, so a sequence's result does not depend on the
others in its batch (in eval mode, where every quantizer's scale is fixed).

A block is post-LN, as BERT and I-BERT: h = LN(x + Attn(x)); out = LN(h + FFN(h)),
FFN = QuantLinear, QuantReLU or IntGELU, QuantLinear. Every residual sum adds two
signed integers at power-of-two scales (exact in float32) and goes to the integer
LayerNorm's input quantizer.
"""

from __future__ import annotations

import brevitas.nn as qnn
import torch
from brevitas.quant_tensor import QuantTensor
from cosyn.models.attention import AttentionError, SparseAttention
from cosyn.models.intlayers import IntGELU, IntLayerNorm, quant_tensor
from cosyn.models.quant import Int8ActPow2, Int32Bias, Uint8ActPow2, weight_quant
from torch import Tensor, nn

__all__ = ["EncoderBlock", "Transformer"]


def _linear(i: int, o: int, weight_bits: int, out_bits: int | None = None, **kw) -> nn.Module:
    out = {"output_quant": Int8ActPow2, "output_bit_width": out_bits} if out_bits else {}
    return qnn.QuantLinear(
        i,
        o,
        bias=True,
        weight_quant=weight_quant(weight_bits),
        bias_quant=Int32Bias,
        return_quant_tensor=True,
        **out,
        **kw,
    )


class EncoderBlock(nn.Module):
    """SparseAttention and a feed-forward block, each with a residual and an IntLayerNorm.

    `attention` holds SparseAttention's keyword arguments; `act` is "relu" (QuantReLU,
    unsigned act_bits) or "gelu" (IntGELU of a signed act_bits input).
    """

    def __init__(
        self,
        dim: int,
        ffn: int,
        act: str = "relu",
        weight_bits: int = 8,
        act_bits: int = 8,
        **attention,
    ) -> None:
        super().__init__()
        if act not in ("relu", "gelu"):
            raise ValueError(f"act must be relu or gelu, not {act!r}")
        self.attn = SparseAttention(
            dim, weight_bits=weight_bits, act_bits=act_bits, own_input=False, **attention
        )
        self.ln1 = IntLayerNorm(dim, in_bits=act_bits, out_bits=act_bits)
        if act == "relu":
            self.ff1 = _linear(dim, ffn, weight_bits)
            self.act = qnn.QuantReLU(
                act_quant=Uint8ActPow2, bit_width=act_bits, return_quant_tensor=True
            )
        else:
            self.ff1 = _linear(dim, ffn, weight_bits, act_bits)
            self.act = IntGELU(act_bits, act_bits)
        self.ff2 = _linear(ffn, dim, weight_bits, act_bits)
        self.ln2 = IntLayerNorm(dim, in_bits=act_bits, out_bits=act_bits)

    def forward(self, x: QuantTensor, lengths: list[int]) -> QuantTensor:
        """Packed tokens (sum(lengths), dim) of sequences of `lengths` -> the same shape."""
        h = self.ln1(x.value + self.attn.packed(x, lengths).value)
        return self.ln2(h.value + self.ff2(self.act(self.ff1(h))).value)


class Transformer(nn.Module):
    """Encoder classifier: token + position embedding, encoder blocks, pooling, head.

    Input: one LongTensor of token ids (L,), or a list of them (any lengths); a CLS token
    (id `vocab`) is put in front of each, so a sequence may hold max_len - 1 tokens.
    Output: float logits (classes,), or (batch, classes) for a list. `pooling` "cls"
    reads the CLS token's features (a global token of the window pattern); "mean"
    averages a sequence's tokens (a float division by L) and requantizes.
    """

    def __init__(
        self,
        vocab: int,
        classes: int,
        dim: int = 32,
        heads: int = 2,
        ffn: int = 64,
        blocks: int = 1,
        max_len: int = 257,
        pooling: str = "cls",
        weight_bits: int = 8,
        act_bits: int = 8,
        act: str = "relu",
        **attention,
    ) -> None:
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be cls or mean, not {pooling!r}")
        self.vocab, self.max_len, self.pooling = vocab, max_len, pooling
        self.tok = nn.Embedding(vocab + 1, dim)
        self.pos = nn.Embedding(max_len, dim)
        self.embed_quant = qnn.QuantIdentity(
            act_quant=Int8ActPow2, bit_width=act_bits, return_quant_tensor=True
        )
        self.blocks = nn.ModuleList(
            EncoderBlock(
                dim, ffn, act, weight_bits, act_bits, heads=heads, max_len=max_len, **attention
            )
            for _ in range(blocks)
        )
        extra = (
            {"input_quant": Int8ActPow2, "input_bit_width": act_bits} if pooling == "mean" else {}
        )
        self.head = qnn.QuantLinear(
            dim,
            classes,
            bias=True,
            weight_quant=weight_quant(weight_bits),
            bias_quant=Int32Bias,
            return_quant_tensor=False,
            **extra,
        )

    def embed(self, seqs: list[Tensor]) -> tuple[QuantTensor, list[int]]:
        """Packed quantized embeddings: one quantizer (one scale) for tokens and positions,
        so their sum is an exact integer sum at that scale."""
        for n, s in enumerate(seqs):
            if not 1 <= len(s) < self.max_len:
                raise AttentionError(
                    f"Transformer: sequence {n} has {len(s)} tokens; lengths must be between "
                    f"1 and max_len - 1 = {self.max_len - 1} (a CLS token goes in front)"
                )
        lengths = [len(s) + 1 for s in seqs]
        cls = torch.full((1,), self.vocab, dtype=torch.long)
        tokens = torch.cat([torch.cat([cls, s.long()]) for s in seqs])
        pos = torch.cat([torch.arange(n) for n in lengths])
        e = self.embed_quant(torch.cat([self.tok(tokens), self.pos(pos)]))
        n = len(tokens)
        value = e.value[:n] + e.value[n:]
        return quant_tensor(value, e.scale, int(e.bit_width) + 1, self.training), lengths

    def forward(self, x: Tensor | list[Tensor]) -> Tensor:
        single = isinstance(x, Tensor)
        h, lengths = self.embed([x] if single else list(x))
        for block in self.blocks:
            h = block(h, lengths)
        starts = torch.tensor([0, *lengths[:-1]]).cumsum(0)
        if self.pooling == "cls":
            pooled = quant_tensor(h.value[starts], h.scale, int(h.bit_width), self.training)
        else:
            pooled = torch.stack([p.mean(0) for p in h.value.split(lengths)])
        out = self.head(pooled)
        return out[0] if single else out
