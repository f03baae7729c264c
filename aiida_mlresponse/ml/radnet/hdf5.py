"""Reader for the HDF5 layout of the radnet paper's data (../shared/data/radnet, README there).

File layout: ``atomic_numbers`` (N,), ``cell`` (3, 3) rows in Å, ``coordinates`` (M, N, 3) Cartesian Å,
``polarization`` (M, 3) Berry-phase P in e/Bohr² as ABINIT printed it (branch not fixed),
``dielectric`` (M, 3, 3) ε∞.

Inside the package everything is atomic units: `RadnetDataset` holds the cell and positions in Bohr,
P in e/Bohr² with its branch fixed, and ε∞ both as tensors and as six Voigt components
(xx, yy, zz, yz, xz, xy; `ml.common`). A `DatasetData` node of kind 'response' is made from such a file by
`aiida_mlresponse.data.dataset.dataset_from_radnet_h5`; `RadnetDataset.from_dataset` goes the other way, from the
columns of such a dataset's file.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from ...physics.polarization import fix_branch
from ...physics.units import ANGSTROM_TO_BOHR
from ..common import tensor_to_voigt

#: target -> number of model outputs (P: 3, ε∞: 6 Voigt components)
TARGETS = {'polarization': 3, 'dielectric': 6}
TARGET_UNITS = {'polarization': 'e/Bohr^2', 'dielectric': 'dimensionless'}


@dataclasses.dataclass
class RadnetDataset:
    """Configurations of one fixed cell with their labels, in atomic units."""

    numbers: np.ndarray  # (N,) atomic numbers
    cell: np.ndarray  # (3, 3) Bohr, rows are lattice vectors
    positions: np.ndarray  # (M, N, 3) Bohr, Cartesian
    polarization: np.ndarray  # (M, 3) e/Bohr², branch fixed
    dielectric: np.ndarray  # (M, 3, 3)
    name: str = ''

    @classmethod
    def from_dataset(cls, arrays: dict, attributes: dict, name: str = '') -> 'RadnetDataset':
        """The columns of a 'response' dataset file (positions and cells in Å, P in e/Bohr² with the branch the
        labelling fixed, ε∞; `attributes['atomic_numbers']`) in atomic units; refuses several cells."""
        cells = np.asarray(arrays['cells'], dtype=float)
        if not np.allclose(cells, cells[0], atol=1e-10):
            raise ValueError('a radnet committee is trained on configurations of one cell; this dataset has several.')
        return cls(np.asarray(attributes['atomic_numbers'], dtype=int), cells[0] * ANGSTROM_TO_BOHR,
                   np.asarray(arrays['positions'], dtype=float) * ANGSTROM_TO_BOHR,
                   np.asarray(arrays['polarization'], dtype=float), np.asarray(arrays['dielectric_tensor'], dtype=float),
                   name=name)

    def __len__(self) -> int:
        return len(self.positions)

    def targets(self, kind: str) -> np.ndarray:
        """The training labels of one kind: P (M, 3) or ε∞ in Voigt order (M, 6)."""
        if kind == 'polarization':
            return self.polarization
        if kind == 'dielectric':
            return tensor_to_voigt(self.dielectric)
        raise ValueError(f'unknown target {kind!r}: choose one of {sorted(TARGETS)}')

    def subset(self, indices) -> 'RadnetDataset':
        indices = np.asarray(indices)
        return dataclasses.replace(
            self, positions=self.positions[indices], polarization=self.polarization[indices],
            dielectric=self.dielectric[indices],
        )


def load_radnet_h5(path, reference_index: int = 0) -> RadnetDataset:
    """Read one radnet HDF5 file; fix the polarization branch against configuration `reference_index`.

    The files hold no undisplaced structure: every configuration is a Gaussian displacement
    (σ ≈ 0.01 Å) of the equilibrium one, so any of them is a valid reference: P changes by ~1e-4
    e/Bohr² between configurations, far below half a quantum (0.0075 e/Bohr² for the BN supercell).
    """
    import h5py

    path = pathlib.Path(path)
    with h5py.File(path, 'r') as handle:
        missing = {'atomic_numbers', 'cell', 'coordinates', 'polarization', 'dielectric'} - set(handle)
        if missing:
            raise KeyError(f'{path}: not the radnet HDF5 layout, missing {sorted(missing)}')
        numbers = np.asarray(handle['atomic_numbers'][()], dtype=int)
        cell = np.asarray(handle['cell'][()], dtype=float) * ANGSTROM_TO_BOHR
        positions = np.asarray(handle['coordinates'][()], dtype=float) * ANGSTROM_TO_BOHR
        polarization = np.asarray(handle['polarization'][()], dtype=float)
        dielectric = np.asarray(handle['dielectric'][()], dtype=float)
    polarization = fix_branch(polarization, polarization[reference_index], cell)
    return RadnetDataset(numbers, cell, positions, polarization, dielectric, name=path.stem)


def split_indices(n: int, validation_fraction: float = 0.2, seed: int = 0):
    """A random train/validation split of range(n) (reproducible)."""
    order = np.random.default_rng(seed).permutation(n)
    n_validation = int(round(validation_fraction * n))
    return np.sort(order[n_validation:]), np.sort(order[:n_validation])
