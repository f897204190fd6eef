"""Convert a trained ReLU model: swap QuantReLUs for calibrated PolyActs or GateActs.

A calibration pass records the inputs each QuantReLU sees; each replacement is fitted
to ReLU over exactly those inputs (least squares) and its quantizers calibrated on
them, so the converted model starts close to the original and is ready to fine-tune.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import brevitas.nn as qnn
import torch
from brevitas.quant_tensor import QuantTensor
from cosyn.models.data import Dataset
from cosyn.models.gate import Costs, GateAct, gate_cost, harden
from cosyn.models.poly import PolyAct, PolyActError
from cosyn.models.train import fit
from torch import Tensor, nn

__all__ = ["anneal", "collect_inputs", "finetune_poly", "replace_relu", "search_gates"]


def _targets(model: nn.Module, layers: str | Sequence[str]) -> list[str]:
    relus = [n for n, m in model.named_modules() if isinstance(m, qnn.QuantReLU)]
    if layers == "all":
        return relus
    if isinstance(layers, str):
        raise PolyActError(f"replace_relu: layers must be 'all' or a list of names, not {layers!r}")
    for name in layers:
        if name not in relus:
            raise PolyActError(
                f"replace_relu: {name!r} is not a QuantReLU of the model; QuantReLUs: {relus}"
            )
    return list(layers)


def collect_inputs(model: nn.Module, names: Sequence[str], data: Tensor) -> dict[str, Tensor]:
    """The float input of each named submodule when `model` runs on `data` (eval, no grad)."""
    if not isinstance(data, Tensor) or data.dim() < 2:
        raise PolyActError(
            "replace_relu: calib_data must be a (batch, ...) float tensor of model inputs, not "
            f"{getattr(data, 'shape', type(data).__name__)}"
        )
    seen: dict[str, Tensor] = {}

    def hook(name: str):
        def record(_m: nn.Module, args: tuple) -> None:
            x = args[0]
            seen[name] = (x.value if isinstance(x, QuantTensor) else x).detach()

        return record

    handles = [model.get_submodule(n).register_forward_pre_hook(hook(n)) for n in names]
    mode = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(data)
    except Exception as e:  # a wrong shape fails deep inside torch with many error types
        raise PolyActError(
            f"replace_relu: calib_data of shape {tuple(data.shape)} does not fit the model "
            f"({str(e).splitlines()[0]}); pass a batch shaped like the model's input"
        ) from e
    finally:
        for h in handles:
            h.remove()
        model.train(mode)
    return seen


def replace_relu(
    model: nn.Module,
    layers: str | Sequence[str] = "all",
    calib_data: Tensor | None = None,
    to: str = "poly",
    degree: int = 2,
    coeff_bits: int = 8,
    costs: Costs | None = None,
) -> nn.Module:
    """Swap QuantReLUs (all, or the named ones) for PolyActs (`to="poly"`) or GateActs
    (`to="gate"`, with `costs`), fitted to ReLU over `calib_data`; returns `model`.

    Each replacement has per-channel coefficients and the ReLU's bit width.
    """
    if to not in ("poly", "gate"):
        raise PolyActError(f"replace_relu: to must be 'poly' or 'gate', not {to!r}")
    if calib_data is None:
        raise PolyActError("replace_relu: pass calib_data, a batch of model inputs")
    names = _targets(model, layers)
    inputs = collect_inputs(model, names, calib_data)
    for name in names:
        relu = model.get_submodule(name)
        x = inputs[name]
        bits = int(relu.act_quant.bit_width())
        kw = dict(channels=int(x.shape[1]), degree=degree, act_bits=bits, coeff_bits=coeff_bits)
        if to == "poly":
            new: nn.Module = PolyAct(**kw).fit_relu(x)
        else:
            new = GateAct(**kw, costs=costs)
            new.poly.fit_relu(x)
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent), attr, new)
    return model


def anneal(model: nn.Module, epoch: int, epochs: int) -> float:
    """The straight-through schedule: at `epoch` of `epochs`, every PolyAct blends in
    ReLU with weight 1 - epoch / epochs (all ReLU at 0, none from `epochs` on), so a
    converted ReLU model moves to its polynomials without collapsing. Returns the weight."""
    mix = max(0.0, 1.0 - epoch / epochs) if epochs > 0 else 0.0
    for m in model.modules():
        if isinstance(m, PolyAct):
            m.relu_mix = mix
    return mix


def finetune_poly(
    model: nn.Module,
    data: Dataset,
    epochs: int = 20,
    lr: float = 2e-3,
    degree: int = 2,
    seed: int = 0,
    quiet: bool = True,
    anneal_epochs: int = 0,
) -> tuple[nn.Module, float]:
    """A copy of the trained ReLU `model` with every QuantReLU a PolyAct fitted over the
    training inputs, fine-tuned, annealing from ReLU over the first `anneal_epochs` (see
    `anneal`); returns (model, test accuracy in percent)."""
    if not 0 <= anneal_epochs < max(epochs, 1):
        raise PolyActError(
            f"finetune_poly: anneal_epochs must be in [0, epochs), not {anneal_epochs!r}"
        )
    poly = replace_relu(copy.deepcopy(model), calib_data=data.x_train, degree=degree)
    schedule = (lambda e: anneal(poly, e, anneal_epochs)) if anneal_epochs else None
    acc = fit(poly, data, epochs=epochs, lr=lr, seed=seed, quiet=quiet, on_epoch=schedule)
    return poly, acc


def search_gates(
    model: nn.Module,
    data: Dataset,
    weight: float,
    costs: Costs,
    epochs: int = 15,
    harden_epochs: int = 5,
    lr: float = 2e-3,
    seed: int = 0,
    quiet: bool = True,
) -> tuple[nn.Module, float, dict[str, str]]:
    """Learn per layer ReLU or PolyAct: a copy of the trained ReLU `model` with GateActs,
    trained with `weight` * expected cost added to the loss, hardened, fine-tuned.

    Returns (model, test accuracy in percent, choice per layer).
    """
    gated = replace_relu(copy.deepcopy(model), calib_data=data.x_train, to="gate", costs=costs)
    extra = lambda m: gate_cost(m, weight)  # noqa: E731
    fit(gated, data, epochs=epochs, lr=lr, seed=seed, quiet=quiet, extra_loss=extra)
    choices = harden(gated)
    return gated, fit(gated, data, epochs=harden_epochs, lr=lr, seed=seed, quiet=quiet), choices
