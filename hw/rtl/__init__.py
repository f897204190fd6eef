"""RTL backend: Amaranth components per node kind and the streaming pipeline (issue 4).

`generate(g, out_dir, parallelism=None)` writes `top.v` and `manifest.json`; the
blocks are registered in `COMPONENTS` by node kind.
"""

from cosyn.hw.rtl import (  # noqa: F401  (register blocks)
    _add,
    _concat,
    _conv2d,
    _dense,
    _labelselect,
    _poly,
    _pool,
    _requant,
)
from cosyn.hw.rtl._base import COMPONENTS, Ctx, element_shape, element_stream
from cosyn.hw.rtl._emit import Design, generate, manifest, verilog_text
from cosyn.hw.rtl._top import Top

__all__ = [
    "COMPONENTS",
    "Ctx",
    "Design",
    "Top",
    "element_shape",
    "element_stream",
    "generate",
    "manifest",
    "verilog_text",
]
