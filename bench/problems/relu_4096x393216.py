# KernelBench level-1 format (Model, get_inputs, get_init_inputs) at its published size: ReLU over
# a 4096 x 393216 fp32 tensor (6 GiB). Written for bench/kernelbench_sizes.py.
import torch
import torch.nn as nn


class Model(nn.Module):
    """Elementwise ReLU."""

    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


batch_size = 4096
dim = 393216


def get_inputs():
    return [torch.rand(batch_size, dim)]


def get_init_inputs():
    return []
