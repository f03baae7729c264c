"""The networks of the PCA-MLP committee: stacks of independent MLPs, and the quadratic features of D."""

from __future__ import annotations

import math

import torch
from torch import nn


def quadratic_features(x: torch.Tensor) -> torch.Tensor:
    """(B, 28): 1, x_i and x_i x_j (i <= j) of standardized inputs (B, 6), the basis of the quadratic part."""
    i, j = torch.triu_indices(6, 6)
    return torch.cat([torch.ones_like(x[:, :1]), x, x[:, i] * x[:, j]], 1)


def quadratic_feature_gradients(x: torch.Tensor) -> torch.Tensor:
    """∂(features)/∂x (B, 28, 6) of `quadratic_features`."""
    g = x.new_zeros(len(x), 28, 6)
    g[:, 1:7] = torch.eye(6, dtype=x.dtype)
    for p, (i, j) in enumerate(zip(*torch.triu_indices(6, 6).tolist())):
        g[:, 7 + p, i] += x[:, j]
        g[:, 7 + p, j] += x[:, i]
    return g


class StackedMLP(nn.Module):
    """M independent MLPs with the same layer sizes, evaluated as one batched product per layer.

    Input (B, n_in) (the same points for every member) or (M, B, n_in); output (M, B, n_out).
    `members` (a slice) runs only those members, on views of the weights. tanh between layers,
    linear output; Glorot-uniform weights (the Keras default the seed used).
    """

    def __init__(self, n_members: int, sizes: list[int], generator: torch.Generator | None = None):
        super().__init__()
        self.n_members = n_members
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            bound = math.sqrt(6.0 / (n_in + n_out))
            w = (torch.rand(n_members, n_in, n_out, generator=generator) * 2 - 1) * bound
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(torch.zeros(n_members, 1, n_out)))

    def forward(self, x: torch.Tensor, members: slice | None = None) -> torch.Tensor:
        h = x
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            if members is not None:
                w, b = w[members], b[members]
            h = torch.baddbmm(b, h, w) if h.dim() == 3 else torch.matmul(h, w) + b
            if i < last:
                h = h.tanh_()  # in place: the product before it does not keep its output for backward
        return h

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """The last hidden layer (M, B, n_hidden): the features the linear output layer combines."""
        h = x
        for w, b in zip(self.weights[:-1], self.biases[:-1]):
            h = (torch.baddbmm(b, h, w) if h.dim() == 3 else torch.matmul(h, w) + b).tanh_()
        return h

    def hidden_and_jacobian(self, x: torch.Tensor, members: slice) -> tuple[torch.Tensor, torch.Tensor]:
        """The last hidden layer of `members` (K, B, n_hidden) and its input derivatives (K, B, n_hidden, n_in).

        x: (K, B, n_in). Forward mode, written out: a = h W + b, h' = tanh(a), dh' = (1 - h'^2) (dh W).
        """
        h, dh = x, None
        for w, b in zip(self.weights[:-1], self.biases[:-1]):
            w, b = w[members], b[members]
            a = torch.baddbmm(b, h, w)
            da = w.transpose(1, 2)[:, None].expand(-1, h.shape[1], -1, -1) if dh is None else torch.einsum('kbij,kio->kboj', dh, w)
            h = a.tanh()
            dh = (1.0 - h * h)[..., None] * da
        return h, dh

    def subset(self, members: slice) -> 'StackedMLP':
        """A new StackedMLP holding a copy of some members' weights (to optimize them on their own)."""
        sizes = [self.weights[0].shape[1], *(w.shape[2] for w in self.weights)]
        sub = StackedMLP(len(range(*members.indices(self.n_members))), sizes)
        with torch.no_grad():
            for mine, theirs in zip(self.parameters(), sub.parameters()):
                theirs.copy_(mine[members])
        return sub

    @torch.no_grad()
    def assign(self, members: slice, sub: 'StackedMLP'):
        """Copy the weights of `sub` (from `subset`) back into those members."""
        for mine, theirs in zip(self.parameters(), sub.parameters()):
            mine[members] = theirs

    def l2(self) -> torch.Tensor:
        """Sum of squared weights (not biases) per member: (M,)."""
        return sum((w**2).sum(dim=(1, 2)) for w in self.weights)


