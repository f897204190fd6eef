"""Errors a user can cause. The CLI prints each in one line and exits with status 2."""

from __future__ import annotations


class CosynError(Exception):
    """Base class: the message names the layer or file and says what to do."""


class UnsupportedLayerError(CosynError):
    """A module or operation that cosyn cannot lower to integer hardware."""


class BitWidthError(CosynError):
    """A bit width that cannot hold the values it must hold."""


class ModelFileError(CosynError):
    """A missing or malformed checkpoint, QONNX file or model reference."""


class GraphError(CosynError):
    """A malformed integer graph: an unknown input, or a shape its node kind does not give."""
