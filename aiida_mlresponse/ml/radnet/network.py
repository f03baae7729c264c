"""radnet: an atom-decomposed 3-D CNN on density cubes (seed 000, METHODS.md part A).

X = w ⊙ (offset + scale · Σ_I f(cube_I))  [+ P(cubes), an optional cube-polynomial head]  [+ T(R), a Taylor head]

- f: a stack of 3x3x3 convolutions with ELU (padding 1; stride 1 or 2), flatten, one dense ELU layer, and
  a linear output layer; optionally plus a *linear* functional of the cube (``linear_head``), which
  represents the first-order response of a cube to its neighbours' displacements exactly.
- scale, offset: the per-component output normalization (targets standardized to zero mean and unit
  variance in training). Inputs are standardized per voxel (mean and standard deviation over the training
  atoms): displacements of 0.01 Å change a cube by ~1 % of its values, and a per-voxel standardization
  makes those changes O(1) for the network (the paper used one global mean and scale).
- w: the per-component weight of the CNN's correction (``residual_weight``, 1 unless a committee fit shrinks
  it toward 0 because the CNN did not beat the Taylor head on its validation configurations).
- P: an optional ``CubePolynomial`` (`heads.py`): Σ_I of a quadratic in the leading principal components of cube_I, fitted in
  closed form (ridge); on the BN data it alone beats the paper's CNN (benchmarks/radnet_accuracy.py).
- T: an optional ``TaylorHead`` (`heads.py`: the ridge polynomial of `taylor.py`, frozen): the CNN then learns the
  residual of the baseline. T depends on the positions only through differentiable torch operations, so
  Z* and Raman tensors still come by autograd, but it only applies to the cell it was fitted on.

Network presets (``LAYER_PRESETS``; a layer is [out_channels, stride]):
- ``paper``: the authors' layer list, 1->64, 64->64, ->16 x4, ->64 stride 2, ->32 x4, dense 1024
  (~1.3 GFLOP per atom for 15³ cubes: too slow to train on a 2-core CPU in minutes);
- ``light``: the same shape with fewer channels, the default measured in benchmarks/radnet_accuracy.py.

All state is tensors (parameters and buffers) plus a JSON-able ``hyperparameters`` dict: checkpoints load
with ``torch.load(weights_only=True)`` (see `ml/checkpoint.py`).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .heads import CubePolynomial, TaylorHead, evaluate_heads

KIND = 'radnet'

LAYER_PRESETS = {
    'paper': {'layers': [[64, 1], [64, 1], [16, 1], [16, 1], [16, 1], [16, 1], [64, 2],
                         [32, 1], [32, 1], [32, 1], [32, 1]], 'dense': 1024},
    'light': {'layers': [[16, 1], [8, 1], [16, 2], [16, 1]], 'dense': 64},
    'tiny': {'layers': [[4, 1], [8, 2]], 'dense': 16},
}

DEFAULT_HYPERPARAMETERS = {
    'n_outputs': 3,
    'cube_size': 9,  # voxels per edge
    'preset': 'light',  # or explicit 'layers' and 'dense' below (they take precedence)
    'layers': None,
    'dense': None,
    'linear_head': True,
    'taylor': None,  # {'degree': d, 'n_atoms': N} for a Taylor head
    'polynomial': None,  # {'components': k} for a cube-polynomial head
    'dtype': 'float32',
}

DTYPES = {'float32': torch.float32, 'float64': torch.float64}


def complete_hyperparameters(hyperparameters: dict | None = None, **overrides) -> dict:
    """Defaults + the given values, with the preset's layers filled in (the dict stored in checkpoints)."""
    values = copy.deepcopy(DEFAULT_HYPERPARAMETERS)
    values.update(hyperparameters or {})
    values.update(overrides)
    unknown = set(values) - set(DEFAULT_HYPERPARAMETERS) - {'density'}
    if unknown:
        raise ValueError(f'unknown radnet hyperparameters: {sorted(unknown)}')
    preset = values['preset']
    if preset is not None:
        if preset not in LAYER_PRESETS:
            raise ValueError(f'unknown preset {preset!r}: choose one of {sorted(LAYER_PRESETS)}')
        values['layers'] = values['layers'] or copy.deepcopy(LAYER_PRESETS[preset]['layers'])
        values['dense'] = values['dense'] or LAYER_PRESETS[preset]['dense']
    if not values['layers'] or not values['dense']:
        raise ValueError('give a preset or both layers and dense')
    if values['cube_size'] < 1 or values['cube_size'] % 2 == 0:
        raise ValueError(f"cube_size must be odd, got {values['cube_size']}")
    if values['dtype'] not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}")
    return values


def count_flops_per_atom(hyperparameters: dict) -> int:
    """Multiply-adds x 2 of one forward pass of the per-atom network (convolutions and dense layers)."""
    hp = complete_hyperparameters(hyperparameters)
    size, channels, flops = hp['cube_size'], 1, 0
    for out_channels, stride in hp['layers']:
        size = (size - 1) // stride + 1
        flops += 2 * 27 * channels * out_channels * size**3
        channels = out_channels
    flops += 2 * channels * size**3 * hp['dense'] + 2 * hp['dense'] * hp['n_outputs']
    if hp['linear_head']:
        flops += 2 * hp['cube_size'] ** 3 * hp['n_outputs']
    return flops


class AtomNetwork(nn.Module):
    """f: one cube (C, 1, n, n, n) -> its atom's contribution (C, n_outputs), in normalized units."""

    def __init__(self, n_outputs: int, cube_size: int, layers, dense: int, linear_head: bool):
        super().__init__()
        convolutions, channels, size = [], 1, cube_size
        for out_channels, stride in layers:
            convolutions += [nn.Conv3d(channels, out_channels, 3, stride=stride, padding=1), nn.ELU()]
            channels, size = out_channels, (size - 1) // stride + 1
        self.convolutions = nn.Sequential(*convolutions)
        self.dense = nn.Sequential(nn.Flatten(), nn.Linear(channels * size**3, dense), nn.ELU())
        self.output = nn.Linear(dense, n_outputs)
        self.linear = nn.Linear(cube_size**3, n_outputs, bias=False) if linear_head else None

    def forward(self, cubes: torch.Tensor) -> torch.Tensor:
        contribution = self.output(self.dense(self.convolutions(cubes)))
        if self.linear is not None:
            contribution = contribution + self.linear(cubes.flatten(1))
        return contribution

    def value_and_input_jacobian(self, cubes: torch.Tensor):
        """f and ∂f_k/∂cube for every output k at once, no autograd: cubes (C, 1, n, n, n) ->
        (contributions (C, n_outputs), jacobian (n_outputs, C, 1, n, n, n)).

        Backpropagation written out, with the K output rows as one batch: each convolution's input gradient is a
        single transposed convolution of K·C cotangents, where autograd would run K convolution backwards (on
        CPU, ~0.2 ms each for these tiny cubes, the bulk of a Z* + Raman prediction). Same values and
        derivatives as `forward` and autograd to rounding (tests/ml/test_radnet.py).
        """
        with torch.no_grad():
            layers = [layer for layer in self.convolutions if isinstance(layer, nn.Conv3d)]
            shapes, pre_activations, inputs = [], [], cubes
            for conv in layers:
                shapes.append(inputs.shape[-3:])
                pre_activations.append(conv(inputs))
                inputs = nn.functional.elu(pre_activations[-1])
            dense = self.dense[1]
            dense_pre = dense(inputs.flatten(1))  # (C, dense)
            contribution = self.output(nn.functional.elu(dense_pre))
            if self.linear is not None:
                contribution = contribution + self.linear(cubes.flatten(1))
            n_outputs, n_cubes = self.output.weight.shape[0], cubes.shape[0]
            # ∂f_k/∂h_dense = W_out[k]; through the ELU (derivative 1 above 0, exp(z) below) and the dense layer.
            grad = self.output.weight[:, None, :] * _elu_derivative(dense_pre)  # (K, C, dense)
            grad = (grad @ dense.weight).reshape((n_outputs,) + tuple(inputs.shape))  # (K, C, channels, s, s, s)
            for conv, pre, shape in zip(reversed(layers), reversed(pre_activations), reversed(shapes)):
                grad = (grad * _elu_derivative(pre)).flatten(0, 1)
                output_padding = tuple(int(size - 1 - (out - 1) * stride)
                                       for size, out, stride in zip(shape, pre.shape[-3:], conv.stride))
                grad = nn.functional.conv_transpose3d(grad, conv.weight, stride=conv.stride, padding=conv.padding,
                                                      output_padding=output_padding)
                grad = grad.reshape((n_outputs, n_cubes) + tuple(grad.shape[1:]))
            if self.linear is not None:
                grad = grad + self.linear.weight.reshape((n_outputs, 1) + tuple(cubes.shape[1:]))
            return contribution, grad


    def value_and_jvp(self, cubes: torch.Tensor, tangents: torch.Tensor):
        """f and its directional derivatives, no autograd: cubes (C, 1, n, n, n), tangents (T, C, 1, n, n, n) ->
        (contributions (C, n_outputs), derivatives (T, C, n_outputs)).

        Forward mode written out: the primal cubes and the T·C tangent cubes go through each convolution as one
        batch (the layers are linear; the bias is added to the primal rows only), the tangents times the ELU
        derivative at the primal pre-activation. When T is smaller than about twice the number of outputs this is
        cheaper than `value_and_input_jacobian` (forward convolutions cost less than transposed ones on CPU).
        """
        with torch.no_grad():
            n_cubes, n_tangents = cubes.shape[0], tangents.shape[0]
            primal, tangent = cubes, tangents.flatten(0, 1)
            for layer in self.convolutions:
                if not isinstance(layer, nn.Conv3d):
                    continue
                both = nn.functional.conv3d(torch.cat([primal, tangent]), layer.weight, None, layer.stride,
                                            layer.padding)
                pre = both[:n_cubes] + layer.bias.reshape(1, -1, 1, 1, 1)
                slope = _elu_derivative(pre)
                primal = nn.functional.elu(pre)
                tangent = (both[n_cubes:].unflatten(0, (n_tangents, n_cubes)) * slope).flatten(0, 1)
            dense = self.dense[1]
            pre = dense(primal.flatten(1))
            hidden = nn.functional.elu(pre)
            tangent = (tangent.flatten(1) @ dense.weight.T).unflatten(0, (n_tangents, n_cubes)) * _elu_derivative(pre)
            contribution = self.output(hidden)
            derivative = tangent @ self.output.weight.T  # (T, C, n_outputs)
            if self.linear is not None:
                contribution = contribution + self.linear(cubes.flatten(1))
                derivative = derivative + tangents.flatten(2) @ self.linear.weight.T
            return contribution, derivative


def stacked_correction_and_jvp(members: list, cubes: torch.Tensor, tangents: torch.Tensor, stacked: dict | None = None):
    """`RadNet.weighted_correction_and_jvp` of several RadNets of one architecture (a committee's members) at once:
    (values (M, n_outputs), derivatives (M, T, n_outputs)), float64.

    The convolutions run per member (different weights); every other operation runs once on the members
    stacked, which for a 2-atom cell saves most of the per-operation overhead. `stacked`: the members' tensors
    stacked by `stack_members` (made here when not given).
    """
    stacked = stacked or stack_members(members)
    dtype = members[0].dtype
    n_cubes, n_tangents = cubes.shape[0], tangents.shape[0]
    with torch.no_grad():
        scale = stacked['input_scale'][:, None]  # (M, 1, n, n, n)
        normalized = (cubes.to(dtype)[None, :, 0] - stacked['input_mean'][:, None]) / scale  # (M, C, n, n, n)
        tangent_input = tangents.to(dtype)[None, :, :, 0] / scale[:, None]  # (M, T, C, n, n, n)
        inputs = torch.cat([normalized, tangent_input.flatten(1, 2)], dim=1).unsqueeze(2)  # (M, C + T·C, 1, ...)
        for weights, bias, stride in zip(stacked['conv_weights'], stacked['conv_biases'], stacked['strides']):
            both = torch.stack([nn.functional.conv3d(inputs[m], weights[m], None, stride, 1)
                                for m in range(len(members))])
            pre = both[:, :n_cubes] + bias[:, None, :, None, None, None]
            slope = _elu_derivative(pre)
            tangent = (both[:, n_cubes:].unflatten(1, (n_tangents, n_cubes)) * slope[:, None]).flatten(1, 2)
            inputs = torch.cat([nn.functional.elu(pre), tangent], dim=1)
        flat = inputs.flatten(2)  # (M, C + T·C, features)
        pre = flat[:, :n_cubes] @ stacked['dense_weight'].transpose(1, 2) + stacked['dense_bias'][:, None]
        hidden = nn.functional.elu(pre)
        tangent = (flat[:, n_cubes:] @ stacked['dense_weight'].transpose(1, 2)).unflatten(1, (n_tangents, n_cubes))
        tangent = tangent * _elu_derivative(pre)[:, None]
        output = stacked['output_weight'].transpose(1, 2)
        contribution = hidden @ output + stacked['output_bias'][:, None]  # (M, C, K)
        derivative = (tangent @ output[:, None]).sum(2)  # (M, T, K)
        if 'linear_weight' in stacked:
            linear = stacked['linear_weight'].transpose(1, 2)
            contribution = contribution + normalized.flatten(2) @ linear
            derivative = derivative + (tangent_input.flatten(3) @ linear[:, None]).sum(2)
        weight = stacked['residual_weight']
        value = weight * (stacked['output_offset'] + stacked['output_scale'] * contribution.sum(1).to(torch.float64))
        return value, (weight * stacked['output_scale'])[:, None] * derivative.to(torch.float64)


def stack_members(members: list) -> dict:
    """The tensors of `stacked_correction_and_jvp`, each stacked over the members (leading axis M)."""
    networks = [member.atom_network for member in members]
    convolutions = [[layer for layer in network.convolutions if isinstance(layer, nn.Conv3d)] for network in networks]
    stacked = {
        'input_mean': torch.stack([m.input_mean for m in members]),
        'input_scale': torch.stack([m.input_scale for m in members]),
        'conv_weights': [torch.stack([c[k].weight for c in convolutions]) for k in range(len(convolutions[0]))],
        'conv_biases': [torch.stack([c[k].bias for c in convolutions]) for k in range(len(convolutions[0]))],
        'strides': [layer.stride for layer in convolutions[0]],
        'dense_weight': torch.stack([n.dense[1].weight for n in networks]),
        'dense_bias': torch.stack([n.dense[1].bias for n in networks]),
        'output_weight': torch.stack([n.output.weight for n in networks]),
        'output_bias': torch.stack([n.output.bias for n in networks]),
        'output_offset': torch.stack([m.output_offset for m in members]),
        'output_scale': torch.stack([m.output_scale for m in members]),
        'residual_weight': torch.stack([m.residual_weight for m in members]),
    }
    if networks[0].linear is not None:
        stacked['linear_weight'] = torch.stack([n.linear.weight for n in networks])
    return {key: value.detach() if isinstance(value, torch.Tensor) else value for key, value in stacked.items()}


def _elu_derivative(pre_activation: torch.Tensor) -> torch.Tensor:
    """d ELU(z)/dz for ELU with alpha 1 (torch's default, used by AtomNetwork)."""
    return torch.exp(pre_activation.clamp(max=0.0))  # exactly 1 above 0


class RadNet(nn.Module):
    """X = offset + scale · Σ_I f(cube_I / input_scale) [+ T(positions)]; see the module docstring."""

    kind = KIND

    def __init__(self, hyperparameters: dict | None = None, **overrides):
        super().__init__()
        hp = complete_hyperparameters(hyperparameters, **overrides)
        self.hyperparameters = hp
        self.dtype = DTYPES[hp['dtype']]
        self.atom_network = AtomNetwork(hp['n_outputs'], hp['cube_size'], hp['layers'], hp['dense'], hp['linear_head'])
        if self.dtype != torch.get_default_dtype():  # (a no-op conversion still walks every module)
            self.atom_network.to(self.dtype)
        n = hp['cube_size']
        self.register_buffer('input_mean', torch.zeros((n, n, n), dtype=self.dtype))
        self.register_buffer('input_scale', torch.ones((n, n, n), dtype=self.dtype))
        self.register_buffer('output_offset', torch.zeros(hp['n_outputs'], dtype=torch.float64))
        self.register_buffer('output_scale', torch.ones(hp['n_outputs'], dtype=torch.float64))
        self.register_buffer('residual_weight', torch.ones(hp['n_outputs'], dtype=torch.float64))
        self._register_load_state_dict_pre_hook(_default_residual_weight)
        taylor = hp['taylor']
        self.taylor = TaylorHead(taylor['degree'], taylor['n_atoms'], hp['n_outputs']) if taylor else None
        polynomial = hp['polynomial']
        self.polynomial = (CubePolynomial(polynomial['components'], n, hp['n_outputs']) if polynomial else None)

    @property
    def n_outputs(self) -> int:
        return self.hyperparameters['n_outputs']

    def correction(self, cubes: torch.Tensor) -> torch.Tensor:
        """offset + scale · Σ_I f(cube_I) (B, n_outputs) float64: the CNN part, before the weight w."""
        return self.output_offset + self.output_scale * self.normalized(cubes).to(torch.float64)

    def zero_output_(self) -> 'RadNet':
        """Start from f = 0 (the prediction is then the offset plus the Taylor head, if any)."""
        with torch.no_grad():
            self.atom_network.output.weight.zero_()
            self.atom_network.output.bias.zero_()
            if self.atom_network.linear is not None:
                self.atom_network.linear.weight.zero_()
        return self

    def atom_contributions(self, cubes: torch.Tensor) -> torch.Tensor:
        """Normalized per-atom contributions: cubes (..., 1, n, n, n) -> (..., n_outputs)."""
        leading = cubes.shape[:-4]
        flat = (cubes.reshape((-1,) + tuple(cubes.shape[-4:])).to(self.dtype) - self.input_mean) / self.input_scale
        return self.atom_network(flat).reshape(leading + (self.n_outputs,))

    def normalized(self, cubes: torch.Tensor) -> torch.Tensor:
        """Σ_I f(cube_I): cubes (B, N, 1, n, n, n) -> (B, n_outputs), the quantity trained on."""
        return self.atom_contributions(cubes).sum(dim=-2)

    def forward(self, cubes: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Physical prediction (B, n_outputs) in float64; positions (B, N, 3) Bohr needed with a Taylor head."""
        return self.residual_weight * self.correction(cubes) + self.heads(cubes, positions)

    def heads(self, cubes: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """The frozen heads' part of ``forward``, P(cubes) + T(positions) (B, n_outputs) float64 (0 without)."""
        return evaluate_heads(self.taylor, self.polynomial, cubes, positions, self.n_outputs)

    def weighted_correction_and_cube_jacobian(self, cubes: torch.Tensor):
        """For one structure, cubes (N, 1, n, n, n): w · correction (n_outputs,) float64 and its derivative with
        respect to the cubes (n_outputs, N, 1, n, n, n) float64, from `AtomNetwork.value_and_input_jacobian`."""
        normalized = (cubes.to(self.dtype) - self.input_mean) / self.input_scale
        contributions, grad = self.atom_network.value_and_input_jacobian(normalized)
        value = self.residual_weight * (self.output_offset + self.output_scale * contributions.sum(0).to(torch.float64))
        weight = (self.residual_weight * self.output_scale).reshape((-1,) + (1,) * cubes.dim())
        return value, weight * (grad / self.input_scale).to(torch.float64)

    def weighted_correction_and_jvp(self, cubes: torch.Tensor, tangents: torch.Tensor):
        """For one structure, cubes (N, 1, n, n, n) and tangent cubes (T, N, 1, n, n, n) (their derivatives along
        T directions): w · correction (n_outputs,) and its derivatives along the directions (T, n_outputs), float64,
        from `AtomNetwork.value_and_jvp`."""
        normalized = (cubes.to(self.dtype) - self.input_mean) / self.input_scale
        contributions, derivatives = self.atom_network.value_and_jvp(normalized, tangents.to(self.dtype) / self.input_scale)
        value = self.residual_weight * (self.output_offset + self.output_scale * contributions.sum(0).to(torch.float64))
        return value, self.residual_weight * self.output_scale * derivatives.sum(1).to(torch.float64)

    def value_and_cube_jacobian(self, cubes: torch.Tensor):
        """For one structure, cubes (N, 1, n, n, n): the cube-dependent part of ``forward`` (w · correction +
        cube polynomial, (n_outputs,) float64, without the Taylor head) and its derivative with respect to the
        cubes (n_outputs, N, 1, n, n, n) float64."""
        value, grad = self.weighted_correction_and_cube_jacobian(cubes)
        if self.polynomial is not None:
            polynomial, polynomial_grad = self.polynomial.value_and_cube_jacobian(cubes)
            value, grad = value + polynomial, grad + polynomial_grad
        return value, grad

    def set_input_standardization(self, cubes: torch.Tensor) -> 'RadNet':
        """Per-voxel mean and standard deviation of training cubes (..., 1, n, n, n)."""
        flat = cubes.reshape((-1,) + tuple(cubes.shape[-3:])).to(torch.float64)
        std = flat.std(dim=0)
        with torch.no_grad():
            self.input_mean.copy_(flat.mean(dim=0))
            self.input_scale.copy_(torch.where(std > 0, std, torch.ones_like(std)))
        return self

    def per_atom_scale_offset(self):
        """(scale, offset) for `derivatives.AtomSumModel` (valid without Taylor and polynomial heads)."""
        return self.residual_weight * self.output_scale, self.residual_weight * self.output_offset


def _default_residual_weight(state_dict, prefix, *args, **kwargs):
    """Checkpoints written before ``residual_weight`` existed load with weight 1 (what they computed)."""
    key = prefix + 'residual_weight'
    if key not in state_dict and prefix + 'output_scale' in state_dict:
        state_dict[key] = torch.ones_like(state_dict[prefix + 'output_scale'])


def build(hyperparameters: dict) -> RadNet:
    """Builder of kind 'radnet' (`ml.registry`)."""
    return RadNet(hyperparameters)

