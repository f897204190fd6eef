"""Brevitas building blocks: quantizer presets, a model zoo, data sets and training."""

from cosyn.models import data, quant, zoo
from cosyn.models.train import accuracy, fit

__all__ = ["accuracy", "data", "fit", "quant", "zoo"]
