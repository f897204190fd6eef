"""hls4ml as it comes: Brevitas -> QONNX -> hls4ml with its own precision choices.

This is the baseline cosyn's HLS backend replaces (benchmarks/hls.py compares the
two): the documented QONNX route (export, clean, channels last, Gemm to MatMul,
clean, `config_from_onnx_model`, `convert_from_onnx_model`), with hls4ml's default
precision for whatever the QONNX graph does not fix. Not bit-exact in general.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["AsIs", "hls4ml_as_is"]


class AsIs:
    """A compiled hls4ml model from the QONNX route; `predict` takes the model's float input."""

    def __init__(self, hls_model: Any, image: bool) -> None:
        self.hls_model = hls_model
        self.image = image

    def predict(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        x = x.transpose(0, 2, 3, 1) if self.image else x
        y = self.hls_model.predict(np.ascontiguousarray(x, dtype=np.float64))
        return np.asarray(y).reshape(n, -1)


def hls4ml_as_is(
    model: nn.Module,
    example_input: torch.Tensor,
    out_dir: str | Path,
    io_type: str = "io_parallel",
    backend: str = "Vitis",
    default_precision: str = "fixed<16,6>",
) -> AsIs:
    """Export `model` to QONNX and convert and compile it with hls4ml's defaults."""
    import hls4ml
    from brevitas.export import export_qonnx
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul
    from qonnx.util.cleanup import cleanup_model

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / "model.qonnx.onnx"
    model.eval()
    export_qonnx(model, example_input[:1], export_path=str(onnx_path))
    mw = cleanup_model(ModelWrapper(str(onnx_path)))
    mw = mw.transform(ConvertToChannelsLastAndClean())
    mw = cleanup_model(mw.transform(GemmToMatMul()))
    config = hls4ml.utils.config.config_from_onnx_model(
        mw, granularity="name", backend=backend, default_precision=default_precision
    )
    hls_model = hls4ml.converters.convert_from_onnx_model(
        mw,
        output_dir=str(out_dir / "hls4ml"),
        backend=backend,
        io_type=io_type,
        hls_config=config,
    )
    hls_model.compile()
    return AsIs(hls_model, example_input.dim() == 4)
