"""The fully connected network of Glorot & Bengio (2010)."""

from __future__ import annotations

import math

import torch
from torch import nn

from initlab.models.activations import check_activation, check_dropout, make_activation
from initlab.models.contract import MonitoredModel


class MLP(nn.Module, MonitoredModel):
    """``depth`` hidden layers ``fc1..fc<depth>`` of ``width`` units, each followed by
    ``act<i>`` (and dropout), then the linear output layer ``out`` (softmax is in the loss).
    The paper's network is depth 5, width 1000. ``widths`` (one per hidden layer) replaces
    ``width`` for layers of unequal size, where fan_in != fan_out tells the variances apart."""

    def __init__(self, depth=5, width=1000, activation="tanh", dropout=0.0, batchnorm=False,
                 in_features=784, num_classes=10, widths=None):
        super().__init__()
        check_activation(activation)
        check_dropout(dropout)
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f"model.depth={depth!r} is invalid: it must be an integer >= 1")
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"model.width={width!r} is invalid: it must be an integer >= 1")
        if widths is None:
            widths = [width] * depth
        widths = list(widths)
        if len(widths) != depth or not all(isinstance(w, int) and w >= 1 for w in widths):
            raise ValueError(f"model.widths={widths!r} is invalid: it must list {depth} "
                             "integers >= 1, one per hidden layer (model.depth)")
        self.activation, self.depth = activation, depth
        n_in = in_features
        for i, units in enumerate(widths, start=1):
            self.add_module(f"fc{i}", nn.Linear(n_in, units, bias=not batchnorm))
            self.add_module(f"bn{i}", nn.BatchNorm1d(units) if batchnorm else nn.Identity())
            self.add_module(f"act{i}", make_activation(activation))
            n_in = units
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(n_in, num_classes)

    @staticmethod
    def data_kwargs(input_shape: tuple[int, ...], num_classes: int) -> dict:
        """The constructor arguments the data sets: inputs flattened, one output per class."""
        return {"in_features": math.prod(input_shape), "num_classes": num_classes}

    def hidden_layers(self) -> list[tuple[str, nn.Module, nn.Module]]:
        """(name, weight layer, its activation) for each hidden layer, input to output."""
        return [(f"fc{i}", getattr(self, f"fc{i}"), getattr(self, f"act{i}"))
                for i in range(1, self.depth + 1)]

    @property
    def output_layer(self) -> nn.Linear:
        return self.out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for i in range(1, self.depth + 1):
            layer, norm, act = (getattr(self, f"{p}{i}") for p in ("fc", "bn", "act"))
            x = self.dropout(act(norm(layer(x))))
        return self.out(x)
