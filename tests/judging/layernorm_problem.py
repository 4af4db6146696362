# LayerNorm over the last dimension (weight, bias and eps matter).
import torch
import torch.nn as nn

batch_size = 16
features = 96


class Model(nn.Module):
    def __init__(self, features):
        super().__init__()
        self.ln = nn.LayerNorm(features, eps=1e-5)

    def forward(self, x):
        return self.ln(x)


def get_inputs():
    return [torch.randn(batch_size, features)]


def get_init_inputs():
    return [features]
