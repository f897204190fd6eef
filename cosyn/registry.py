"""Packages whose modules register themselves: a node kind, its RTL block, its timing.

A node kind is defined in one module per layer of the stack (`cosyn.ir.kinds`, `hw/rtl`,
`perfmodel`, and a converter in `hw/hls/_convert.py`), each adding its entry to that
layer's registry (`KINDS`, `COMPONENTS`, `TIMINGS`, `CONVERTERS`) when imported. A
package imports its modules by walking its own folder, so adding a kind edits no list.
"""

from __future__ import annotations

import importlib
import pkgutil

__all__ = ["import_submodules"]


def import_submodules(package: str, skip: tuple[str, ...] = ()) -> None:
    """Import every module of `package` (its folder, not subpackages) except `skip`."""
    path = importlib.import_module(package).__path__
    for m in pkgutil.iter_modules(path):
        if not m.ispkg and m.name not in skip:
            importlib.import_module(f"{package}.{m.name}")
