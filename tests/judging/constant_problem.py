# A degenerate problem: the output is (almost) a constant whatever the input.
import torch
import torch.nn as nn

rows = 8
cols = 64


class Model(nn.Module):
    def forward(self, x):
        return torch.tanh(x * 0 + 20) + 1e-9 * x


def get_inputs():
    return [torch.randn(rows, cols)]


def get_init_inputs():
    return []
