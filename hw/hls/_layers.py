"""hls4ml extension layers for the integer-graph nodes hls4ml has no exact layer for.

An extension is data: an `Extension` names the hls4ml layer class, the C++ function
(in a header under hw/hls/templates/), the constant arrays it takes (written by
hls4ml as weights, typed from the graph), the integer constants of its config struct
the typedefs that config declares, and its type lists (a member template per list,
specialized once per entry, for a C++ function that needs one type per step).
`register()` turns each into an hls4ml layer
class with its config and function templates, via hls4ml's extension API
(register_layer, Backend.register_template, Backend.register_source). A new node
kind (a polynomial activation, say) declares its `Extension` (`extension(...)`) beside its
converter in _convert.py, and writes one C++ function in a header here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hls4ml.backends import get_backend
from hls4ml.backends.template import FunctionCallTemplate, LayerConfigTemplate
from hls4ml.model.attributes import Attribute
from hls4ml.model.layers import Layer, register_layer

__all__ = ["EXTENSIONS", "TEMPLATES", "Extension", "extension", "register"]

TEMPLATES = Path(__file__).parent / "templates"
_BACKENDS = ("Vivado", "Vitis")


@dataclass(frozen=True)
class Extension:
    """One hls4ml extension layer.

    `weights` are the constant arrays passed after the inputs and output, in order;
    `consts` the config-struct constants (name -> C++ type), read from the layer's
    attributes; `types` the config typedefs (name -> weight whose type it is). Every
    extension has an integer `work_bits` attribute: the width of its signed work type.
    `typelists` (member template name -> list attribute of C++ type names) become
    `template <unsigned K> struct NAME;` in the config, with `NAME<K>::type` the K-th.
    """

    name: str
    function: str
    base_config: str
    header: str
    weights: tuple[str, ...] = ()
    consts: dict[str, str] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)
    typelists: dict[str, str] = field(default_factory=dict)
    n_inputs: int = 1
    out_size: str = ""  # the attribute giving a flat output's size (else the input's shape)


EXTENSIONS: dict[str, Extension] = {}  # name -> extension, each added by its converter's module


def extension(ext: Extension) -> Extension:
    """Add `ext` to EXTENSIONS (its converter's module declares it beside the converter)."""
    EXTENSIONS[ext.name] = ext
    return ext


def _layer_class(ext: Extension) -> type[Layer]:
    def initialize(self: Layer) -> None:
        shape = list(self.get_input_variable(self.inputs[0]).shape)
        self.add_output_variable([self.get_attr(ext.out_size)] if ext.out_size else shape)
        for w in ext.weights:
            self.add_weights_variable(name=w, var_name=f"{w}{{index}}", data=w)

    attrs = [Attribute("n_in"), Attribute("work_bits")]
    attrs += [Attribute(c, value_type=bool if t == "bool" else int) for c, t in ext.consts.items()]
    attrs += [Attribute(a, value_type=list) for a in ext.typelists.values()]
    return type(ext.name, (Layer,), {"_expected_attributes": attrs, "initialize": initialize})


def _config_template(ext: Extension, layer: type[Layer]) -> type[LayerConfigTemplate]:
    def __init__(self: LayerConfigTemplate) -> None:
        LayerConfigTemplate.__init__(self, layer)

    def format(self: LayerConfigTemplate, node: Layer) -> str:
        lines = [f"struct config{node.index} : nnet::{ext.base_config} {{"]
        lines.append(f"    static const unsigned n_in = {node.get_attr('n_in')};")
        for c, t in ext.consts.items():
            v = node.get_attr(c)
            lines.append(f"    static const {t} {c} = {str(v).lower() if t == 'bool' else v};")
        lines.append(f"    typedef ap_int<{node.get_attr('work_bits')}> work_t;")
        for t, w in ext.types.items():
            lines.append(f"    typedef {node.get_weights(w).type.name} {t};")
        after = []
        for t, a in ext.typelists.items():
            lines.append(f"    template <unsigned K> struct {t};")
            after += [
                f"template <> struct config{node.index}::{t}<{k}> {{ typedef {ty} type; }};"
                for k, ty in enumerate(node.get_attr(a))
            ]
        return "\n".join([*lines, "};", *after]) + "\n"

    return type(
        f"{ext.name}Config", (LayerConfigTemplate,), {"__init__": __init__, "format": format}
    )


def _function_template(ext: Extension, layer: type[Layer]) -> type[FunctionCallTemplate]:
    def __init__(self: FunctionCallTemplate) -> None:
        FunctionCallTemplate.__init__(self, layer, include_header=[f"nnet_utils/{ext.header}"])

    def format(self: FunctionCallTemplate, node: Layer) -> str:
        ins = [node.get_input_variable(i) for i in node.inputs[: ext.n_inputs]]
        out = node.get_output_variable()
        targs = [v.type.name for v in ins] + [out.type.name, f"config{node.index}"]
        args = [v.name for v in ins] + [out.name] + [node.get_weights(w).name for w in ext.weights]
        return f"nnet::{ext.function}<{', '.join(targs)}>({', '.join(args)});"

    return type(
        f"{ext.name}Function", (FunctionCallTemplate,), {"__init__": __init__, "format": format}
    )


_registered: set[str] = set()


def register() -> None:
    """Register every extension with hls4ml (once per process)."""
    for ext in EXTENSIONS.values():
        if ext.name in _registered:
            continue
        layer = _layer_class(ext)
        register_layer(ext.name, layer)
        for name in _BACKENDS:
            backend: Any = get_backend(name)
            backend.register_source(TEMPLATES / ext.header)
        # Vitis runs the Vivado templates too (vivado:apply_templates is in its flow).
        vivado: Any = get_backend("Vivado")
        vivado.register_template(_config_template(ext, layer))
        vivado.register_template(_function_template(ext, layer))
        _registered.add(ext.name)
