"""RTL backend: Amaranth components per node kind and the streaming pipeline (issue 4).

`generate(g, out_dir, parallelism=None)` writes `top.v` and `manifest.json`; the
blocks are registered in `COMPONENTS` by node kind, each by the module that defines it
(every module of this package is imported: a new block edits no list here).
"""

from cosyn.hw.rtl._base import COMPONENTS, Ctx, element_shape, element_stream
from cosyn.hw.rtl._emit import Design, generate, manifest, verilog_text
from cosyn.hw.rtl._top import Top

from cosyn.registry import import_submodules

import_submodules(__name__)

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
