"""Performance model: exact cycles and estimated resources and clock, per node and pipeline.

`estimate(g, device, parallelism)` is the entry point (`estimate_hls` for the HLS
backend's reuse factor); `devices` the target parts;
`blocks`, `conv`, `pool` and a module per newer kind (`concat`, `labelselect`, `product`)
each block's timing, defined once
(every module is imported, so a kind's timing module registers itself; `loss` and
`calibrate` are loaded on use);
`pipeline` their composition (which the RTL backend builds and writes its manifest from);
`cost(model, example_input, device, metric)` the differentiable cost for a training loss
(`loss`, loaded on first use: it needs cosyn.models, which the estimate does not).
"""

from cosyn.perfmodel.devices import DEVICES, Device, UnknownDeviceError, device
from cosyn.perfmodel.estimate import Estimate, NodeEstimate, estimate, estimate_plan
from cosyn.perfmodel.hls import HLSLayer, estimate_hls
from cosyn.perfmodel.pipeline import Plan, plan

from cosyn.registry import import_submodules

import_submodules(__name__, skip=("calibrate", "loss"))

__all__ = [
    "DEVICES",
    "Device",
    "Estimate",
    "HLSLayer",
    "NodeEstimate",
    "Plan",
    "UnknownDeviceError",
    "cost",
    "device",
    "estimate",
    "estimate_hls",
    "estimate_plan",
    "plan",
]


def __getattr__(name: str):
    if name == "cost":
        from cosyn.perfmodel.loss import cost

        return cost
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
