# KernelBench level-1 format at its published size: softmax over the last dimension of a
# 4096 x 393216 fp32 tensor (6 GiB). Written for bench/kernelbench_sizes.py.
import torch
import torch.nn as nn


class Model(nn.Module):
    """Row-wise softmax."""

    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x, dim=1)


batch_size = 4096
dim = 393216


def get_inputs():
    return [torch.rand(batch_size, dim)]


def get_init_inputs():
    return []
