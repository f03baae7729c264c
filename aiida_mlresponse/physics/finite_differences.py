"""∂χ/∂τ by central finite differences of ε∞, with the crystal's space group cutting the displaced runs.

Conventions (physics.raman): ∂χ_αβ/∂τ_κγ is an array (natom, 3, 3, 3) indexed [κ, γ, α, β], in Bohr⁻¹,
with χ = (ε∞ - 1)/4π. Cells have the lattice vectors as rows; positions are Cartesian; all lengths in Bohr.

A space-group operation S = (R, t) sends the point x to R x + t (R Cartesian, orthogonal) and atom κ to
atom S(κ) (R τ_κ + t = τ_S(κ) modulo a lattice vector). Displacing atom κ by u and then applying S gives
the crystal with atom S(κ) displaced by R u, whose susceptibility is R χ Rᵀ. Hence

    ∂χ_αβ/∂τ_S(κ)γ = Σ_abc R_γc R_αa R_βb ∂χ_ab/∂τ_κc,                                        (1)

i.e. every index of the tensor rotates, and the atom index is permuted. A Born charge Z*_κ,αβ (both
indices Cartesian vectors) and ε∞ transform the same way. A rigid translation leaves χ unchanged:

    Σ_κ ∂χ/∂τ_κ = 0  (acoustic sum rule, ASR).                                                (2)

One run displaced by ±h u on atom κ measures the directional derivative d = Σ_γ u_γ ∂χ/∂τ_κγ
= (ε∞(+h) - ε∞(-h)) / (8π h) + O(h²). By (1) every operation S turns it into a second measurement:
Σ_γ (R u)_γ ∂χ/∂τ_S(κ)γ = R d Rᵀ. Stacking these, with (2), gives for each (α, β) a linear system in
the 3 natom unknowns ∂χ_αβ/∂τ_κγ; the displacements suffice when its matrix has rank 3 natom.
"""

from __future__ import annotations

import itertools

import numpy as np

__all__ = [
    'symmetry_operations', 'irreducible_displacements', 'displaced_structures', 'dchi_dtau_from_finite_differences',
    'symmetrize_cartesian', 'symmetrize_atomic',
]

# Candidate displacement directions, in the order they are preferred: Cartesian axes first (the displaced
# structure keeps more symmetry, so each ABINIT run is cheaper), then diagonals, whose images under a
# site group can span R³ where an axis spans only a plane (e.g. a 3-fold axis along z).
_DIRECTIONS = np.array(
    [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, -1, 0], [1, 0, 1], [1, 0, -1], [0, 1, 1], [0, 1, -1],
     [1, 1, 1], [1, 1, -1], [1, -1, 1], [-1, 1, 1]], dtype=float)
_DIRECTIONS /= np.linalg.norm(_DIRECTIONS, axis=1, keepdims=True)


def symmetry_operations(cell, positions, numbers, tolerance: float = 1e-5):
    """Space-group operations of a periodic cell: (rotations (nop, 3, 3), translations (nop, 3), permutations (nop, natom)).

    rotations are Cartesian (x -> R x + t), translations Cartesian (Bohr), permutations[s, κ] = S(κ), the atom
    at R τ_κ + t. The identity comes first. `tolerance` is a Cartesian distance (same unit as positions).

    A brute-force search rather than spglib: the project's cells have 2-4 atoms, so trying the 3⁹ integer
    matrices is instant, and it saves a compiled dependency. Lattice operations are the integer matrices N
    with entries in {-1, 0, 1} and R a_i = Σ_j N_ij a_j orthogonal; that set is complete for reduced
    (Niggli/Minkowski) cells such as the project's ones, and a missed operation would only cost extra runs.
    Translations come from sending atom 0 onto each atom of its species; pure translations of supercells
    appear as operations with R = 1.
    """
    cell = np.asarray(cell, dtype=float)
    positions = np.asarray(positions, dtype=float)
    numbers = np.asarray(numbers)
    natom = len(positions)
    metric = cell @ cell.T
    candidates = np.array(list(itertools.product((-1, 0, 1), repeat=9)), dtype=float).reshape(-1, 3, 3)
    candidates = candidates[np.abs(np.abs(np.linalg.det(candidates)) - 1.0) < 1e-8]
    # R a_i = N_ij a_j (rows a_i) <=> cell Rᵀ = N cell; orthogonal R <=> N G Nᵀ = G (G the metric).
    deviation = np.abs(candidates @ metric @ np.swapaxes(candidates, 1, 2) - metric).max(axis=(1, 2))
    lattice_ops = candidates[deviation < 2.0 * tolerance * np.sqrt(metric.diagonal().max())]
    inverse = np.linalg.inv(cell)
    rotations, translations, permutations = [], [], []
    for n in lattice_ops:
        rotation = (inverse @ n @ cell).T
        rotated = positions @ rotation.T
        for target in np.flatnonzero(numbers == numbers[0]):
            translation = positions[target] - rotated[0]
            diff = ((rotated + translation)[:, None, :] - positions[None, :, :]) @ inverse  # reduced
            distance = np.linalg.norm((diff - np.round(diff)) @ cell, axis=-1)  # (natom images, natom)
            match = (distance < tolerance) & (numbers[:, None] == numbers[None, :])
            if match.sum(axis=1).tolist() != [1] * natom:
                continue
            permutation = match.argmax(axis=1)
            if len(set(permutation.tolist())) == natom:
                rotations.append(rotation)
                translations.append(translation)
                permutations.append(permutation)
    order = sorted(range(len(rotations)), key=lambda s: (np.abs(rotations[s] - np.eye(3)).max() > 1e-8,
                                                         np.abs(translations[s]).max() > tolerance))
    return (np.array(rotations)[order], np.array(translations)[order], np.array(permutations)[order])


def _rotate(rotation, tensor, first_axis: int = 0):
    """Apply `rotation` to every index of `tensor` from `first_axis` on (T_abc... -> R_ai R_bj ... T_ij...)."""
    for axis in range(first_axis, tensor.ndim):
        tensor = np.moveaxis(np.tensordot(rotation, tensor, axes=(1, axis)), 0, axis)
    return tensor


def symmetrize_cartesian(operations, tensor) -> np.ndarray:
    """Group average (1/|G|) Σ_S R·T of a Cartesian tensor (3, ..., 3), e.g. ε∞; every index rotates."""
    rotations = operations[0]
    tensor = np.asarray(tensor, dtype=float)
    return sum(_rotate(r, tensor) for r in rotations) / len(rotations)


def symmetrize_atomic(operations, tensor) -> np.ndarray:
    """Group average of a per-atom tensor (natom, 3, ..., 3), eq. (1): T_S(κ) <- mean over S of R·T_κ.

    Works for Z* (natom, 3, 3) and ∂χ/∂τ (natom, 3, 3, 3). The ASR is not imposed here (it commutes with
    the average): see physics.born.impose_acoustic_sum_rule.
    """
    rotations, _, permutations = operations
    tensor = np.asarray(tensor, dtype=float)
    result = np.zeros_like(tensor)
    for rotation, permutation in zip(rotations, permutations):
        result[permutation] += _rotate(rotation, tensor, first_axis=1)
    return result / len(rotations)


def _system_matrix(operations, displacements, natom: int, acoustic_sum_rule: bool) -> np.ndarray:
    """Rows Σ_γ (R u)_γ X_S(κ)γ of every displacement image, then the 3 ASR rows Σ_κ X_κγ, over 3 natom unknowns."""
    rotations, _, permutations = operations
    rows = []
    for atom, direction in displacements:
        for rotation, permutation in zip(rotations, permutations):
            row = np.zeros((natom, 3))
            row[permutation[atom]] = rotation @ direction
            rows.append(row.ravel())
    if acoustic_sum_rule:
        rows.extend(np.tile(np.eye(3), natom))
    return np.array(rows).reshape(-1, 3 * natom)


def irreducible_displacements(cell, positions, numbers, tolerance: float = 1e-5, acoustic_sum_rule: bool = True):
    """A short list of displacements [(κ, unit Cartesian direction (3,)), ...] that determine ∂χ/∂τ.

    Greedy: among all (atom, direction) candidates, add the one whose images under the group raise the rank
    of the system (module docstring) most, until it reaches 3 natom; ties go to the lower atom index and
    then to the earlier direction (axes before diagonals). With the ASR, the last atom needs no run once
    the others are known. Zincblende (Td sites): one displacement, atom 0 along x. A cell without
    symmetry: every direction of every atom but one (all of them without the ASR).
    """
    operations = symmetry_operations(cell, positions, numbers, tolerance)
    natom = len(positions)
    chosen = []
    rank = np.linalg.matrix_rank(_system_matrix(operations, chosen, natom, acoustic_sum_rule)) if acoustic_sum_rule else 0
    while rank < 3 * natom:
        best, best_rank = None, rank
        for candidate in itertools.product(range(natom), _DIRECTIONS):
            trial = np.linalg.matrix_rank(_system_matrix(operations, chosen + [candidate], natom, acoustic_sum_rule))
            if trial > best_rank:
                best, best_rank = candidate, trial
        chosen.append(best)
        rank = best_rank
    return [(int(atom), direction.copy()) for atom, direction in chosen]


def displaced_structures(positions, displacements, step_bohr: float) -> np.ndarray:
    """Positions (ndisp, 2, natom, 3) in Bohr: [i, 0] has atom κ_i moved by +h u_i, [i, 1] by -h u_i.

    The cell is unchanged. Feed ε∞ of [:, 0] and [:, 1] to dchi_dtau_from_finite_differences.
    """
    positions = np.asarray(positions, dtype=float)
    result = np.repeat(positions[None, None], len(displacements), axis=0).repeat(2, axis=1)
    for i, (atom, direction) in enumerate(displacements):
        result[i, 0, atom] += step_bohr * np.asarray(direction, dtype=float)
        result[i, 1, atom] -= step_bohr * np.asarray(direction, dtype=float)
    return result


def dchi_dtau_from_finite_differences(cell, positions, numbers, displacements, epsilons_plus, epsilons_minus,
                                      step_bohr: float, tolerance: float = 1e-5,
                                      acoustic_sum_rule: bool = True) -> np.ndarray:
    """∂χ_αβ/∂τ_κγ (natom, 3, 3, 3) [κ, γ, α, β], Bohr⁻¹, from ε∞ (ndisp, 3, 3) of the ±h structures.

    χ = (ε∞ - 1)/4π with ε∞ symmetrized in αβ, through `position_derivatives`.
    """
    plus = np.asarray(epsilons_plus, dtype=float)
    minus = np.asarray(epsilons_minus, dtype=float)
    if plus.shape != (len(displacements), 3, 3) or minus.shape != plus.shape:
        raise ValueError(f'epsilons must be ({len(displacements)}, 3, 3), got {plus.shape} and {minus.shape}')
    symmetric = 0.5 * (plus + np.swapaxes(plus, 1, 2)), 0.5 * (minus + np.swapaxes(minus, 1, 2))
    return position_derivatives(cell, positions, numbers, displacements, *symmetric, step_bohr, tolerance,
                                acoustic_sum_rule) / (4.0 * np.pi)


def born_charges_from_finite_differences(cell, positions, numbers, displacements, polarizations_plus,
                                         polarizations_minus, step_bohr: float, tolerance: float = 1e-5,
                                         acoustic_sum_rule: bool = True) -> np.ndarray:
    """Z*_κ,αβ = Ω ∂P_α/∂τ_κβ (natom, 3, 3) in e from P (ndisp, 3) e/Bohr² of the ±h structures (same branch)."""
    volume = abs(np.linalg.det(np.asarray(cell, dtype=float)))
    derivatives = position_derivatives(cell, positions, numbers, displacements, polarizations_plus,
                                       polarizations_minus, step_bohr, tolerance, acoustic_sum_rule)  # [κ, β, α]
    return volume * np.swapaxes(derivatives, 1, 2)


def position_derivatives(cell, positions, numbers, displacements, values_plus, values_minus, step_bohr: float,
                         tolerance: float = 1e-5, acoustic_sum_rule: bool = True) -> np.ndarray:
    """∂X/∂τ_κγ (natom, 3, *X.shape) [κ, γ, ...] of a Cartesian tensor X (every index rotates: ε∞, P) from its values
    (ndisp, *X.shape) at the ±h structures of `displaced_structures`.

    d_i = (X(+h) - X(-h)) / 2h; the images R·d_i of all operations and the ASR rows are solved by least squares
    (module docstring); the result is then averaged over the group (eq. 1) so that it has the crystal's symmetry
    exactly, and the ASR is imposed by removing the mean over atoms. Raises ValueError when the displacements
    do not determine the tensor.
    """
    operations = symmetry_operations(cell, positions, numbers, tolerance)
    natom = len(positions)
    plus = np.asarray(values_plus, dtype=float)
    minus = np.asarray(values_minus, dtype=float)
    if len(plus) != len(displacements) or minus.shape != plus.shape:
        raise ValueError(f'values must hold one entry per displacement ({len(displacements)}), got {plus.shape} and '
                         f'{minus.shape}')
    derivatives = (plus - minus) / (2.0 * step_bohr)
    shape = derivatives.shape[1:]
    matrix = _system_matrix(operations, displacements, natom, acoustic_sum_rule)
    if np.linalg.matrix_rank(matrix) < 3 * natom:
        raise ValueError('the displacements do not determine the derivatives: use irreducible_displacements')
    images = [_rotate(rotation, d) for d in derivatives for rotation in operations[0]]
    rhs = np.array(images).reshape(len(images), -1)
    if acoustic_sum_rule:
        rhs = np.vstack([rhs, np.zeros((3, rhs.shape[1]))])
    solution = np.linalg.lstsq(matrix, rhs, rcond=None)[0].reshape(natom, 3, *shape)
    symmetric = symmetrize_atomic(operations, solution)
    return symmetric - symmetric.mean(axis=0, keepdims=True) if acoustic_sum_rule else symmetric
