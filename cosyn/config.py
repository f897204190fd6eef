"""Naming models and shapes on the command line: `package.module:factory` or a QONNX file."""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn

from cosyn.errors import ModelFileError

__all__ = ["DEFAULT_MODEL", "load_model", "parse_shape"]

DEFAULT_MODEL = "cosyn.models.zoo:mlp"


def load_model(ref: str, checkpoint: Path | None = None, **options: object) -> nn.Module:
    """Call the factory `package.module:factory` with `options`, then load a state_dict
    checkpoint into it."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise ModelFileError(f"{ref}: name a model as package.module:factory or a .onnx file")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ModelFileError(f"{ref}: cannot import the factory ({e})") from e
    try:
        model = factory(**options)
    except TypeError as e:
        if not options:
            raise
        raise ModelFileError(
            f"{ref}: the factory does not take {', '.join(options)} ({e}); drop the option"
        ) from e
    if checkpoint is not None:
        try:
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except FileNotFoundError as e:
            raise ModelFileError(f"{checkpoint}: checkpoint not found") from e
        except Exception as e:  # torch raises many kinds for a bad file
            raise ModelFileError(
                f"{checkpoint}: not a state_dict for {ref} ({str(e).splitlines()[0]}); "
                "save one with torch.save(model.state_dict(), path)"
            ) from e
    return model.eval()


def parse_shape(text: str) -> tuple[int, ...]:
    """'64' -> (64,), '1,8,8' -> (1, 8, 8): the shape of one sample."""
    try:
        shape = tuple(int(s) for s in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(s <= 0 for s in shape):
        raise ModelFileError(f"input shape {text!r}: give positive integers such as 64 or 1,8,8")
    return shape
