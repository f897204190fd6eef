"""Brevitas building blocks: quantizer presets, polynomial activations, a model zoo,
data sets and training."""

from cosyn.models import data, intops, quant, zoo
from cosyn.models.attention import AttentionError, SparseAttention
from cosyn.models.encoder import EncoderBlock, Transformer
from cosyn.models.gate import GateAct, gate_cost, gates, harden
from cosyn.models.intlayers import IntGELU, IntLayerNorm
from cosyn.models.poly import PolyAct, PolyActError
from cosyn.models.replace import anneal, finetune_poly, replace_relu, search_gates
from cosyn.models.seqfit import fit_sequences, majority, sequence_accuracy
from cosyn.models.train import accuracy, fit

__all__ = [
    "AttentionError",
    "EncoderBlock",
    "GateAct",
    "IntGELU",
    "IntLayerNorm",
    "PolyAct",
    "PolyActError",
    "SparseAttention",
    "Transformer",
    "accuracy",
    "anneal",
    "data",
    "finetune_poly",
    "fit",
    "fit_sequences",
    "gate_cost",
    "gates",
    "harden",
    "intops",
    "majority",
    "quant",
    "replace_relu",
    "search_gates",
    "sequence_accuracy",
    "zoo",
]
