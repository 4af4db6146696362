# KernelBench level-1 format at its published size: a sum over dimension 1 of a 128 x 4096 x 4095
# fp32 tensor, keeping the dimension (8 GiB in). Written for bench/kernelbench_sizes.py.
import torch
import torch.nn as nn


class Model(nn.Module):
    """Sums over one dimension, keeping it with size 1."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sum(x, dim=self.dim, keepdim=True)


batch_size = 128
dim1 = 4096
dim2 = 4095
reduce_dim = 1


def get_inputs():
    return [torch.rand(batch_size, dim1, dim2)]


def get_init_inputs():
    return [reduce_dim]
