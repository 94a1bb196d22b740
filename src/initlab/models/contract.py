"""The model contract: what the monitors and the report need of a model, checked when a fit
starts (:meth:`initlab.module.Classifier.setup`).

A model (``Classifier.model``) exposes:

- ``hidden_layers()`` -> ``[(name, weight layer, activation module), ...]``, one entry per hidden
  layer, from the input to the output. ``name`` is the weight layer's own name in the model
  (``model.named_modules()``): every statistic and TensorBoard tag is keyed by it. The weight
  layer is a Conv/Linear layer; the activation module is the nonlinearity applied to its output
  (after any normalisation), called once per forward pass: the monitors hook it, its input is
  the pre-activation s and its output the activation z.
- ``activation``: the nonlinearity's name, one of :data:`initlab.models.activations.ACTIVATIONS`
  (the saturation statistic depends on it).
- ``output_layer``: the Conv/Linear layer that maps the last hidden layer to the class scores.

The weight layers are defined (registered) in the order they are applied, the output layer last:
the run's files (``init_stats.json``, ``weights.json``) list layers in that order, and the report
takes the layers with activation statistics as the hidden ones and the last as the output layer.
"""

from __future__ import annotations

from typing import NoReturn, Protocol, runtime_checkable

from torch import nn

from initlab.models.activations import ACTIVATIONS
from initlab.utils import WEIGHT_LAYER_TYPES, weight_layers

CONTRACT = ("hidden_layers() -> [(name, weight layer, activation module)] for each hidden layer "
            "from input to output, name the weight layer's name in the model; activation: the "
            f"nonlinearity's name, one of {sorted(ACTIVATIONS)}; output_layer: the Conv/Linear "
            "layer that gives the class scores, defined after every other weight layer "
            "(initlab.models.contract.MonitoredModel)")


@runtime_checkable
class MonitoredModel(Protocol):
    """What the monitors and the report need of a model (see the module docstring)."""

    activation: str

    @property
    def output_layer(self) -> nn.Module: ...

    def hidden_layers(self) -> list[tuple[str, nn.Module, nn.Module]]: ...


class ModelContractError(ValueError):
    """The model lacks what the monitors and the report need."""


def _fail(model: nn.Module, problem: str) -> NoReturn:
    raise ModelContractError(f"model {type(model).__name__} {problem}. The model contract: "
                             f"{CONTRACT}")


def check_model_contract(model: nn.Module) -> None:
    """Raise :class:`ModelContractError`, naming what is missing or wrong, unless ``model``
    satisfies :class:`MonitoredModel`."""
    if not callable(getattr(model, "hidden_layers", None)):
        _fail(model, "has no hidden_layers() method")
    activation = getattr(model, "activation", None)
    if activation is None:
        _fail(model, "has no `activation` attribute")
    if activation not in ACTIVATIONS:
        _fail(model, f"has activation={activation!r}, not one of {sorted(ACTIVATIONS)}")
    output = getattr(model, "output_layer", None)
    if output is None:
        _fail(model, "has no `output_layer` attribute")
    layers = weight_layers(model)
    names = {id(m): name for name, m in layers.items()}
    if not isinstance(output, WEIGHT_LAYER_TYPES) or id(output) not in names:
        _fail(model, f"has output_layer={type(output).__name__}, not a Conv/Linear layer of the model")
    hidden = model.hidden_layers()
    if not isinstance(hidden, (list, tuple)) or not hidden:
        _fail(model, f"returns {hidden!r} from hidden_layers(), not a non-empty list")
    modules = {id(m) for m in model.modules()}
    for entry in hidden:
        if not (isinstance(entry, tuple) and len(entry) == 3):
            _fail(model, f"lists {entry!r} in hidden_layers(), not a (name, weight layer, "
                         "activation module) tuple")
        name, layer, act = entry
        if names.get(id(layer)) != name:
            _fail(model, f"lists hidden layer {name!r} whose weight layer is not the model's "
                         f"Conv/Linear layer of that name (the model's are {list(layers)})")
        if not isinstance(act, nn.Module) or id(act) not in modules:
            _fail(model, f"lists hidden layer {name!r} with activation {act!r}, not a module of "
                         "the model")
        if layer is output:
            _fail(model, f"lists its output layer {name!r} among the hidden layers")
    order = list(layers)
    positions = [order.index(name) for name, _, _ in hidden]
    if positions != sorted(positions) or order[-1] != names[id(output)]:
        _fail(model, f"defines its weight layers in the order {order}: the hidden layers "
                     f"{[name for name, _, _ in hidden]} must come in that order, then the "
                     f"output layer {names[id(output)]!r} last")
