"""Brevitas building blocks: quantizer presets, polynomial activations, a model zoo,
data sets and training."""

from cosyn.models import data, quant, zoo
from cosyn.models.gate import GateAct, gate_cost, gates, harden
from cosyn.models.poly import PolyAct, PolyActError
from cosyn.models.replace import anneal, finetune_poly, replace_relu, search_gates
from cosyn.models.train import accuracy, fit

__all__ = [
    "GateAct",
    "PolyAct",
    "PolyActError",
    "accuracy",
    "anneal",
    "data",
    "finetune_poly",
    "fit",
    "gate_cost",
    "gates",
    "harden",
    "quant",
    "replace_relu",
    "search_gates",
    "zoo",
]
