"""The model zoo: small Brevitas models with power-of-two quantizers."""

from __future__ import annotations

import brevitas.nn as qnn
from cosyn.models.encoder import Transformer
from cosyn.models.gate import GateAct
from cosyn.models.poly import PolyAct, PolyActError
from cosyn.models.quant import Int32Bias, Uint8ActPow2, weight_quant
from torch import nn

__all__ = ["ACTS", "cnn", "mlp", "transformer"]

ACTS = ("relu", "poly", "gate")


def _act(act_bits: int, act: str = "relu", channels: int | None = None) -> nn.Module:
    """QuantReLU, a per-channel PolyAct (degree 2) or a GateAct between the two."""
    if act == "relu":
        return qnn.QuantReLU(act_quant=Uint8ActPow2, bit_width=act_bits, return_quant_tensor=True)
    if act == "poly":
        return PolyAct(channels, degree=2, act_bits=act_bits)
    return GateAct(channels, degree=2, act_bits=act_bits)


def _check_act(act: str) -> None:
    if act not in ACTS:
        raise PolyActError(f"act must be one of {', '.join(ACTS)}, not {act!r}")


def _input(act_bits: int) -> nn.Module:
    return qnn.QuantIdentity(act_quant=Uint8ActPow2, bit_width=act_bits, return_quant_tensor=True)


def _linear(i: int, o: int, weight_bits: int, last: bool = False) -> nn.Module:
    return qnn.QuantLinear(
        i,
        o,
        bias=True,
        weight_quant=weight_quant(weight_bits),
        bias_quant=Int32Bias,
        return_quant_tensor=not last,
    )


def mlp(
    in_features: int = 64,
    hidden: tuple[int, ...] = (64, 32),
    classes: int = 10,
    weight_bits: int = 4,
    act_bits: int = 8,
    act: str = "relu",
) -> nn.Sequential:
    """Quantized MLP: input quantizer, then QuantLinear + activation per hidden layer.

    `act` is "relu" (QuantReLU), "poly" (PolyAct) or "gate" (GateAct). The last
    QuantLinear returns float logits (exact: every scale is a power of two).
    """
    _check_act(act)
    layers: list[nn.Module] = [_input(act_bits)]
    for i, o in zip((in_features, *hidden), hidden, strict=False):
        layers += [_linear(i, o, weight_bits), _act(act_bits, act, o)]
    layers.append(_linear(hidden[-1] if hidden else in_features, classes, weight_bits, True))
    return nn.Sequential(*layers)


def cnn(
    channels: tuple[int, int] = (8, 16),
    classes: int = 10,
    weight_bits: int = 4,
    act_bits: int = 8,
    size: int = 8,
    act: str = "relu",
) -> nn.Sequential:
    """Quantized CNN for 1 x size x size images: two 3x3 convolutions (the second with
    stride 2), each followed by an activation (`act` as for `mlp`), then a QuantLinear
    classifier."""
    _check_act(act)
    c1, c2 = channels

    def conv(i: int, o: int, stride: int) -> nn.Module:
        return qnn.QuantConv2d(
            i,
            o,
            3,
            stride=stride,
            padding=1,
            bias=True,
            weight_quant=weight_quant(weight_bits),
            bias_quant=Int32Bias,
            return_quant_tensor=True,
        )

    out = (size + 1) // 2
    return nn.Sequential(
        _input(act_bits),
        conv(1, c1, 1),
        _act(act_bits, act, c1),
        conv(c1, c2, 2),
        _act(act_bits, act, c2),
        nn.Flatten(),
        _linear(c2 * out * out, classes, weight_bits, True),
    )


def transformer(
    vocab: int = 15,
    classes: int = 10,
    dim: int = 32,
    heads: int = 2,
    ffn: int = 64,
    blocks: int = 1,
    max_len: int = 257,
    pattern: str = "dense",
    window: int = 4,
    n_global: int = 1,
    k: int = 8,
    pooling: str = "cls",
    act: str = "relu",
    weight_bits: int = 8,
    act_bits: int = 8,
) -> Transformer:
    """Quantized encoder classifier over token sequences of any length up to max_len - 1
    (ListOps' vocabulary and classes by default): token + position embedding, `blocks`
    encoder blocks with SparseAttention (`pattern` "dense", "window" or "topk"), integer
    softmax and LayerNorm, ReLU or i-GELU feed-forward, CLS or mean pooling, a QuantLinear
    head returning float logits."""
    return Transformer(
        vocab,
        classes,
        dim=dim,
        heads=heads,
        ffn=ffn,
        blocks=blocks,
        max_len=max_len,
        pooling=pooling,
        weight_bits=weight_bits,
        act_bits=act_bits,
        act=act,
        pattern=pattern,
        window=window,
        n_global=n_global,
        k=k,
    )
