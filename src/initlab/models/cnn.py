"""The default CNN: two conv blocks and a hidden fully connected layer."""

from __future__ import annotations

import torch
from torch import nn

from initlab.models.activations import check_activation, check_dropout, make_activation
from initlab.models.contract import MonitoredModel


class CNN(nn.Module, MonitoredModel):
    """conv1 -> act1 -> pool -> conv2 -> act2 -> pool -> fc1 -> act3 -> dropout -> out.

    With the defaults (24 and 32 channels, 5x5 and 3x3 kernels, 256 hidden) it has 215k
    parameters. :meth:`hidden_layers` pairs each weight layer with its nonlinearity ``act<i>``
    (the model contract, :mod:`initlab.models.contract`).
    """

    def __init__(self, channels=(24, 32), kernel_sizes=(5, 3), hidden=256, activation="relu",
                 dropout=0.0, batchnorm=False, in_channels=1, image_size=28, num_classes=10):
        super().__init__()
        check_activation(activation)
        check_dropout(dropout)
        if len(channels) != 2 or len(kernel_sizes) != 2:
            raise ValueError(
                f"model.channels={list(channels)} and model.kernel_sizes={list(kernel_sizes)} "
                "must each have 2 entries (one per conv block)"
            )
        self.activation = activation
        size = image_size
        c_in = in_channels
        for i, (c_out, k) in enumerate(zip(channels, kernel_sizes, strict=False), start=1):
            self.add_module(f"conv{i}", nn.Conv2d(c_in, c_out, k, bias=not batchnorm))
            self.add_module(f"bn{i}", nn.BatchNorm2d(c_out) if batchnorm else nn.Identity())
            self.add_module(f"act{i}", make_activation(activation))
            size = (size - k + 1) // 2
            if size < 1:
                raise ValueError(f"model.kernel_sizes={list(kernel_sizes)} too large for {image_size}px")
            c_in = c_out
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(c_in * size * size, hidden)
        self.act3 = make_activation(activation)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, num_classes)

    @staticmethod
    def data_kwargs(input_shape: tuple[int, ...], num_classes: int) -> dict:
        """The constructor arguments the data sets, from its (channels, height, width)."""
        channels, height, width = input_shape
        if height != width:
            raise ValueError(f"model=cnn takes square images; the data gives {height}x{width}")
        return {"in_channels": channels, "image_size": height, "num_classes": num_classes}

    def hidden_layers(self) -> list[tuple[str, nn.Module, nn.Module]]:
        """(name, weight layer, its activation) for each hidden layer, input to output."""
        return [("conv1", self.conv1, self.act1), ("conv2", self.conv2, self.act2),
                ("fc1", self.fc1, self.act3)]

    @property
    def output_layer(self) -> nn.Linear:
        return self.out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.act1(self.bn1(self.conv1(x))))
        x = self.pool(self.act2(self.bn2(self.conv2(x))))
        x = self.dropout(self.act3(self.fc1(x.flatten(1))))
        return self.out(x)
