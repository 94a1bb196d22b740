"""Activation functions by name."""

from __future__ import annotations

from torch import nn

ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "softsign": nn.Softsign,  # x / (1 + |x|), Glorot & Bengio's alternative to tanh
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "linear": nn.Identity,
}

def check_activation(name: str) -> str:
    if name not in ACTIVATIONS:
        raise ValueError(
            f"model.activation={name!r} is not supported; allowed: {sorted(ACTIVATIONS)}"
        )
    return name


def make_activation(name: str) -> nn.Module:
    return ACTIVATIONS[check_activation(name)]()


def check_dropout(p: float) -> float:
    if not 0.0 <= p < 1.0:
        raise ValueError(f"model.dropout={p!r} is invalid: it must be in [0, 1)")
    return p
