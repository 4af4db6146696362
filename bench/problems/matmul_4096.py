# KernelBench level-1 format at its published size: C = A @ B for square fp32 matrices, N = 4096.
# Written for bench/kernelbench_sizes.py.
import torch
import torch.nn as nn


class Model(nn.Module):
    """One square matrix multiplication."""

    def __init__(self):
        super().__init__()

    def forward(self, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        return torch.matmul(A, B)


N = 4096


def get_inputs():
    return [torch.rand(N, N), torch.rand(N, N)]


def get_init_inputs():
    return []
