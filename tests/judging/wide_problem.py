# A wide row sum whose terms cancel: the fp32 reference is itself further from the exact sum than 1e-4.
import torch
import torch.nn as nn

rows = 8
cols = 32768
INPUT_SETS = []  # the published size only (this problem is about the comparison)


class Model(nn.Module):
    def forward(self, x):
        return x.sum(dim=1)


def get_inputs():
    big = torch.randn(rows, cols // 2) * 1000
    x = torch.cat([big, -big + torch.randn(rows, cols // 2)], dim=1)
    return [x[:, torch.randperm(cols)].contiguous()]


def get_init_inputs():
    return []
