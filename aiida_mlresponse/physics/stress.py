"""Stress of a free-energy model F(D) of the Mg cell, uniaxial-stress paths and instability detection.

Seed 002, Sec. 4.5 and Appendix B (METHODS.md part B):
  - Cauchy stress, small-distortion form: σ_ij = (1/V(ε)) ∂F/∂ε_ij, ε the symmetric linear strain,
    D(ε) the map of `physics.strain.strain_to_deformation`; derivatives by autograd through D(ε).
    ∂/∂ε_ij is the derivative with respect to the symmetric tensor: for i ≠ j, ε_ij and ε_ji move
    together and the derivative is split evenly between them, σ_12 = (1/V) ∂F/∂γ_12 with
    γ_12 = 2ε_12 the engineering shear.
  - Uniaxial stress along x_i: ε_ii prescribed, the five other components minimize F
    (σ_jk = 0 for (j,k) ≠ (i,i)), by gradient descent with Barzilai-Borwein steps.
  - Exact Cauchy stress of the deformed cell (what ABINIT reports, and what training on ABINIT's
    stress needs): a small strain δε applied on top of the cell h (rows a, b, c), a_k -> (1 + δε) a_k,
    gives σ_ij = (1/V) ∂F/∂δε_ij = (1/V) Σ_k ∂F/∂h_ki h_kj (symmetrized), and with F a function of D
    alone, σ = Σ_m ∂F/∂D_m M_m (`cauchy_stress_map`). It equals the small-distortion form at ε = 0
    and differs from it by O(ε σ) at finite strain.
  - Instability: along the path, the Hessian of F with respect to the free strain components gets a
    soft or negative eigenvalue, the uniaxial stress passes a maximum (the tangent stiffness vanishes
    or the load drops), and the relaxed strain and atomic positions jump.

`energy` is any callable taking deformations (B, 6) as a torch tensor (angles in degrees) and
returning F (B,) in Ha, differentiable; e.g. `PCAMLPCommittee.free_energy`. Use float64.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from .minimize import barzilai_borwein
from .strain import cell_to_deformation, cell_volume, deformation_to_cell, deformation_to_strain, strain_to_deformation
from .units import HA_PER_BOHR3_TO_GPA

EnergyFn = Callable[[torch.Tensor], torch.Tensor]

# Voigt order of the six independent components and the factor of each in the symmetric tensor
VOIGT_PAIRS = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


def voigt_to_tensor(voigt: torch.Tensor) -> torch.Tensor:
    """Symmetric ε (..., 3, 3) from the six tensor components (ε11, ε22, ε33, ε23, ε13, ε12)."""
    e11, e22, e33, e23, e13, e12 = voigt.unbind(-1)
    return torch.stack([
        torch.stack([e11, e12, e13], -1),
        torch.stack([e12, e22, e23], -1),
        torch.stack([e13, e23, e33], -1),
    ], -2)


def strain_volume(strain: torch.Tensor) -> torch.Tensor:
    """Volume (Bohr³) of the Mg cell at linear strain ε (..., 3, 3), through D(ε)."""
    return cell_volume(deformation_to_cell(strain_to_deformation(strain)))


def energy_of_strain(energy: EnergyFn, voigt: torch.Tensor) -> torch.Tensor:
    """F (B,) at strains given by their six tensor components (B, 6)."""
    return energy(strain_to_deformation(voigt_to_tensor(voigt)))


def stress(energy: EnergyFn, strain) -> np.ndarray:
    """Cauchy stress σ (B, 3, 3), Ha/Bohr³, at symmetric strains (B, 3, 3) (or one (3, 3)), by autograd."""
    e = torch.as_tensor(np.asarray(strain), dtype=torch.float64)
    single = e.dim() == 2
    e = e.reshape(-1, 3, 3).clone().requires_grad_(True)
    # symmetrize inside the graph so that dF/dε is the symmetric-tensor derivative
    sym = 0.5 * (e + e.transpose(-1, -2))
    f = energy(strain_to_deformation(sym))
    (grad,) = torch.autograd.grad(f.sum(), e)
    sigma = (grad / strain_volume(sym.detach())[:, None, None]).numpy()
    return sigma[0] if single else sigma


def cauchy_stress_map(deformations) -> torch.Tensor:
    """M (B, 6, 6), float64: the Cauchy stress of the cell of D, in Voigt order (11, 22, 33, 23, 13, 12),
    is σ_v = Σ_m ∂F/∂D_m M[:, m, v] for any F of D (which is invariant under rotations of the cell).

    M[:, m] = (1/V) sym(Σ_k ∂D_m/∂h_k ⊗ h_k) with h = `deformation_to_cell`(D) (rows a, b, c, Bohr), the
    frame the ABINIT cells are written in.
    """
    d = torch.as_tensor(np.asarray(deformations), dtype=torch.float64).reshape(-1, 6)
    with torch.enable_grad():  # autograd is the method here, also when the caller is under no_grad
        cell = deformation_to_cell(d).requires_grad_(True)
        d_of_cell = cell_to_deformation(cell)
        rows = []
        for m in range(6):
            (grad,) = torch.autograd.grad(d_of_cell[:, m].sum(), cell, retain_graph=m < 5)
            tensor = torch.einsum('bki,bkj->bij', grad, cell.detach())
            rows.append(0.5 * (tensor + tensor.transpose(1, 2)))
    volume = cell_volume(cell.detach())
    rows = [torch.stack([t[:, i, j] for i, j in VOIGT_PAIRS], -1) / volume[:, None] for t in rows]
    return torch.stack(rows, 1)


def cauchy_stress(energy: EnergyFn, deformations) -> np.ndarray:
    """Cauchy stress σ (B, 3, 3), Ha/Bohr³, of the cells of D (B, 6) by autograd: comparable to ABINIT's."""
    with torch.enable_grad():
        d = torch.as_tensor(np.asarray(deformations), dtype=torch.float64).reshape(-1, 6).clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(energy(d).sum(), d)
    voigt = torch.einsum('bm,bmv->bv', grad, cauchy_stress_map(d.detach()))
    return voigt_to_tensor(voigt).numpy()


def free_energy_gradient(deformations, stress) -> np.ndarray:
    """∂F/∂D (B, 6) from Cauchy stresses (B, 3, 3) of the cells of D (B, 6): the inverse of `cauchy_stress`,
    σ_v = Σ_m ∂F/∂D_m M[m, v] solved for ∂F/∂D (M is invertible for any cell of positive volume)."""
    stress = np.asarray(stress, dtype=np.float64).reshape(-1, 3, 3)
    voigt = np.stack([stress[:, i, j] for i, j in VOIGT_PAIRS], -1)
    stress_map = cauchy_stress_map(deformations).numpy()
    return np.linalg.solve(np.transpose(stress_map, (0, 2, 1)), voigt[..., None])[..., 0]


def stress_finite_difference(energy: EnergyFn, strain, h: float = 1e-5) -> np.ndarray:
    """σ (3, 3) at one strain by central differences of F, the cross-check of `stress`."""
    e0 = np.asarray(strain, dtype=float)
    volume = float(strain_volume(torch.as_tensor(e0)))
    sigma = np.zeros((3, 3))
    for i, j in VOIGT_PAIRS:
        values = []
        for sign in (1.0, -1.0):
            e = e0.copy()
            if i == j:
                e[i, i] += sign * h
            else:  # move ε_ij and ε_ji together by h/2: derivative with respect to γ_ij = 2ε_ij
                e[i, j] += sign * h / 2.0
                e[j, i] += sign * h / 2.0
            values.append(float(energy(strain_to_deformation(torch.as_tensor(e)[None]))[0]))
        derivative = (values[0] - values[1]) / (2.0 * h)
        if i == j:
            sigma[i, i] = derivative / volume
        else:
            sigma[i, j] = sigma[j, i] = derivative / volume
    return sigma


def _gradient_free(energy: EnergyFn, voigt: np.ndarray, free: np.ndarray):
    v = torch.as_tensor(voigt, dtype=torch.float64).clone().requires_grad_(True)
    f = energy_of_strain(energy, v[None])[0]
    (g,) = torch.autograd.grad(f, v)
    return f.item(), g.numpy()[free]


def free_strain_hessian(energy: EnergyFn, voigt, free) -> np.ndarray:
    """Hessian of F with respect to the free Voigt components (n_free, n_free), Ha, by double autograd."""
    v0 = torch.as_tensor(np.asarray(voigt, dtype=float))
    free_idx = torch.as_tensor(np.flatnonzero(free))

    def f_of(free_values):
        v = v0.clone()
        v = v.index_put((free_idx,), free_values)
        return energy_of_strain(energy, v[None])[0]

    return torch.autograd.functional.hessian(f_of, v0[free_idx]).numpy()


def strain_hessian_min_eigenvalue(energy: EnergyFn, deformations) -> np.ndarray:
    """Lowest eigenvalue (B,), Ha, of the 6 x 6 Hessian of F with respect to the Voigt strain (ε11, ε22, ε33,
    ε23, ε13, ε12) at each cell of D (B, 6): the stiffness of the softest strain mode there. It falls
    towards zero (or below) as a cell nears an elastic instability. Batched double autograd (six passes)."""
    with torch.enable_grad():
        d = torch.as_tensor(np.asarray(deformations), dtype=torch.float64).reshape(-1, 6)
        e = deformation_to_strain(d)
        voigt = torch.stack([e[:, i, j] for i, j in VOIGT_PAIRS], -1).clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(energy_of_strain(energy, voigt).sum(), voigt, create_graph=True)
        rows = [torch.autograd.grad(grad[:, k].sum(), voigt, retain_graph=k < 5)[0] for k in range(6)]
    hessian = torch.stack(rows, 1).detach().numpy()
    return np.linalg.eigvalsh(0.5 * (hessian + np.swapaxes(hessian, 1, 2)))[:, 0]


@dataclass
class UniaxialPath:
    """Uniaxial-stress path along x_axis: relaxed strains, stress and stability at each step."""

    axis: int
    applied: np.ndarray  # ε_ii prescribed (n,)
    strain: np.ndarray  # relaxed Voigt strains (n, 6)
    deformation: np.ndarray  # D (n, 6)
    sigma: np.ndarray  # σ_ii (n,), Ha/Bohr³
    residual_stress: np.ndarray  # largest |σ| of the components that should vanish (n,)
    min_eigenvalue: np.ndarray  # lowest eigenvalue of the free-strain Hessian of F (n,), Ha
    converged: np.ndarray  # (n,) bool
    in_domain: np.ndarray  # (n,) bool: every strain component within max_strain (a model is only trusted there)
    extra: dict = field(default_factory=dict)

    @property
    def transverse(self) -> np.ndarray:
        """The two other normal strains (n, 2), in axis order."""
        others = [k for k in range(3) if k != self.axis]
        return self.strain[:, others]


def uniaxial_path(
    energy: EnergyFn,
    axis: int,
    applied,
    *,
    gtol: float = 1e-9,
    max_iter: int = 2000,
    start=None,
    kick: float = 1e-3,
    soft_threshold: float = 0.0,
    max_strain: float = 0.2,
    max_move: float | None = 0.005,
) -> UniaxialPath:
    """Uniaxial stress along x_axis for each prescribed ε_ii in `applied`, in order (continuation).

    At each step the other five strain components start from the previous step's relaxed values and
    minimize F with Barzilai-Borwein steps. If the Hessian of F in the free components has an
    eigenvalue below `soft_threshold` there, the state is a saddle or a maximum: it is pushed by `kick`
    along the unstable eigenvector (both signs tried, the lower energy kept) and relaxed again,
    so a path that reaches an instability follows the branch it falls onto, as the physical crystal.
    A machine-learned F is meaningless far from its training data (a tanh net is flat there and the
    relaxation can run away): states with a strain component beyond `max_strain` are marked
    `in_domain = False`, and the next step restarts from the unrelaxed strain.
    Each relaxation move changes no strain component by more than `max_move`, so the continuation
    follows the minimum it starts in (a jump then needs that minimum to vanish: a real instability)
    and cannot leap to another basin of a fitted surface on one long Barzilai-Borwein step.
    """
    applied = np.asarray(applied, dtype=float)
    free = np.ones(6, dtype=bool)
    free[axis] = False
    current = np.zeros(6) if start is None else np.asarray(start, dtype=float).copy()
    rows = {key: [] for key in ('strain', 'sigma', 'residual', 'eig', 'converged', 'in_domain')}
    for value in applied:
        current[axis] = value

        def relax(v0):
            def fun(x):
                v = v0.copy()
                v[free] = x
                return _gradient_free(energy, v, free)

            result = barzilai_borwein(fun, v0[free], gtol=gtol, max_iter=max_iter, max_move=max_move)
            v = v0.copy()
            v[free] = result.x
            return v, result

        current, result = relax(current)
        eigval, eigvec = np.linalg.eigh(free_strain_hessian(energy, current, free))
        if eigval[0] < soft_threshold:  # unstable stationary point: fall off it
            candidates = []
            for sign in (1.0, -1.0):
                v = current.copy()
                v[free] += sign * kick * eigvec[:, 0]
                candidates.append(relax(v))
            current, result = min(candidates, key=lambda c: c[1].fun)
            eigval = np.linalg.eigvalsh(free_strain_hessian(energy, current, free))
        sigma = stress(energy, voigt_to_tensor(torch.as_tensor(current)).numpy())
        off = [sigma[i, j] for k, (i, j) in enumerate(VOIGT_PAIRS) if k != axis]
        rows['strain'].append(current.copy())
        rows['sigma'].append(sigma[axis, axis])
        rows['residual'].append(float(np.max(np.abs(off))))
        rows['eig'].append(float(eigval[0]))
        rows['converged'].append(bool(result.converged))
        rows['in_domain'].append(bool(np.max(np.abs(current)) <= max_strain))
        if not rows['in_domain'][-1]:
            current = np.zeros(6)
    strains = np.array(rows['strain'])
    deformation = strain_to_deformation(voigt_to_tensor(torch.as_tensor(strains))).numpy()
    return UniaxialPath(
        axis=axis, applied=applied, strain=strains, deformation=deformation, sigma=np.array(rows['sigma']),
        residual_stress=np.array(rows['residual']), min_eigenvalue=np.array(rows['eig']),
        converged=np.array(rows['converged']), in_domain=np.array(rows['in_domain']),
    )


@dataclass
class Instability:
    found: bool
    index: int | None  # first path index flagged
    applied: float | None  # ε_ii there
    reason: str
    soft_indices: np.ndarray
    jump_indices: np.ndarray
    peak_indices: np.ndarray = field(default_factory=lambda: np.array([], dtype=int))


def detect_instability(
    path: UniaxialPath,
    positions: np.ndarray | None = None,
    *,
    soft_fraction: float = 0.05,
    jump_factor: float = 5.0,
) -> Instability:
    """Where the path loses stability.

    Three signs, any suffices:
      - soft mode: the lowest eigenvalue of the free-strain Hessian falls below `soft_fraction` of its
        value at the start of the path (or becomes negative);
      - stress maximum: the uniaxial tangent stiffness Δσ_ii/Δε_ii between steps falls below
        `soft_fraction` of its first value (or changes sign: a load drop), the instability of a crystal
        loaded by a stress rather than held at a strain;
      - jump: the change per step of the relaxed strain, or of the atomic positions `positions`
        (n, ...) if given, exceeds `jump_factor` times its median over the path.
    A relaxation that left the model's domain is flagged too (with that reason): it is not a
    physical instability, but no stress beyond it can be trusted.
    """
    eig = path.min_eigenvalue
    soft = np.flatnonzero(eig < soft_fraction * abs(eig[0]))
    jumps = []
    series = [path.strain]
    if positions is not None:
        series.append(np.asarray(positions, dtype=float).reshape(len(eig), -1))
    for values in series:
        step = np.linalg.norm(np.diff(values, axis=0), axis=1) / np.abs(np.diff(path.applied))
        typical = np.median(step)
        jumps.append(np.flatnonzero(step > jump_factor * max(typical, 1e-12)) + 1)
    jump = np.unique(np.concatenate(jumps)) if jumps else np.array([], dtype=int)
    stiffness = np.diff(path.sigma) / np.diff(path.applied)
    peak = np.flatnonzero(stiffness < soft_fraction * abs(stiffness[0])) + 1 if len(stiffness) else np.array([], dtype=int)
    outside = np.flatnonzero(~path.in_domain)
    flagged = sorted(set(soft.tolist()) | set(jump.tolist()) | set(peak.tolist()) | set(outside.tolist()))
    if not flagged:
        return Instability(False, None, None, 'stable along the path', soft, jump, peak)
    first = flagged[0]
    reasons = []
    if first in outside:
        reasons.append('the relaxed strain left the domain of the model (|ε| > max_strain)')
    if first in soft:
        reasons.append(f'soft free-strain Hessian (lowest eigenvalue {eig[first]:.3g} Ha)')
    if first in peak:
        reasons.append(f'stress maximum (tangent stiffness {stiffness[first - 1] * HA_PER_BOHR3_TO_GPA:.3g} GPa)')
    if first in jump:
        reasons.append('jump in the relaxed strain or positions')
    return Instability(True, first, float(path.applied[first]), '; '.join(reasons), soft, jump, peak)


# -- strains relative to an equilibrium cell, and the quasi-Newton pieces of the DFT-only path

#: ∂σ/∂ε of the normal components (x1 = a, x2 = b basal, x3 = c) of hcp Mg, GPa: C11 = C22, C33, C12, C13
#: = C23 near the measured ones (59, 62, 26, 22); only the first Jacobian of the DFT path, Broyden corrects it
MG_ELASTIC_GUESS_GPA = ((59.0, 26.0, 22.0), (26.0, 59.0, 22.0), (22.0, 22.0, 62.0))


def total_strain(equilibrium, relative):
    """Normal strains of the reference cell of a cell strained by `relative` from the one at `equilibrium`:
    1 + ε = (1 + ε0)(1 + ε_rel), component by component (both (..., k))."""
    return (1.0 + np.asarray(equilibrium)) * (1.0 + np.asarray(relative)) - 1.0


def relative_strain(equilibrium, total):
    """The inverse of `total_strain`."""
    return (1.0 + np.asarray(total)) / (1.0 + np.asarray(equilibrium)) - 1.0


def broyden_update(jacobian, step, change):
    """Broyden's rank-one update of a Jacobian J (n, n) after a step s gave the change y: J + (y - Js) sᵀ / sᵀs."""
    step = np.asarray(step, dtype=float)
    norm = float(step @ step)
    if norm < 1e-14:
        return np.asarray(jacobian, dtype=float)
    return jacobian + np.outer(np.asarray(change) - jacobian @ step, step) / norm


def equilibrium_strain(energy: EnergyFn, *, gtol: float = 1e-10, max_iter: int = 3000) -> np.ndarray:
    """Voigt strain (6,) where every stress of F vanishes (the model's own zero-stress cell)."""
    free = np.ones(6, dtype=bool)
    result = barzilai_borwein(lambda x: _gradient_free(energy, x, free), np.zeros(6), gtol=gtol, max_iter=max_iter)
    return result.x


def uniaxial_path_from(energy: EnergyFn, axis: int, applied, equilibrium, **kwargs) -> UniaxialPath:
    """`uniaxial_path` from the zero-stress cell at Voigt strain `equilibrium` (6,) (`equilibrium_strain`):
    `applied` is the strain along x_axis relative to that cell, so σ = 0 at applied 0. The path's `applied`
    is the relative strain; `strain` and `deformation` stay those of the reference cell;
    `extra['relative_strain']` (n, 6) is the strain relative to the equilibrium cell."""
    equilibrium = np.asarray(equilibrium, dtype=float)
    total = total_strain(equilibrium[axis], np.asarray(applied, dtype=float))
    path = uniaxial_path(energy, axis, total, start=equilibrium, **kwargs)
    path.applied = np.asarray(applied, dtype=float)
    relative = path.strain - equilibrium
    relative[:, :3] = relative_strain(equilibrium[:3], path.strain[:, :3])
    path.extra.update(equilibrium=equilibrium, relative_strain=relative)
    return path
