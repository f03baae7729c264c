"""The seed's linear-regression baseline (seed 002, Fig. 8): the same PCA and standardization as the
PCA-MLP model, with each MLP replaced by an affine map of D."""

from __future__ import annotations

import numpy as np

from ..common import standardization
from .pca import fit_field_pca, pca_project, pca_reconstruct


class LinearBaseline:
    """Least squares D -> scalars and D -> PCA coefficients of each field."""

    def fit(self, deformations, scalars: dict, fields: dict | None = None, pca_components: int | float = 50):
        x = self._design(deformations)
        self.coef = {}
        for name, values in scalars.items():
            y = np.asarray(values, dtype=np.float64).reshape(len(x), -1)
            self.coef[name] = np.linalg.lstsq(x, y, rcond=None)[0]
        self.pca = {}
        for name, values in (fields or {}).items():
            mean, components, _ = fit_field_pca(values, pca_components)
            self.pca[name] = (mean, components, values.shape[1:])
            self.coef[f'field:{name}'] = np.linalg.lstsq(x, pca_project(values, mean, components), rcond=None)[0]
        return self

    def _design(self, deformations):
        d = np.asarray(deformations, dtype=np.float64)
        if not hasattr(self, 'mean'):
            self.mean, self.std = standardization(d)
        return np.hstack([np.ones((len(d), 1)), (d - self.mean) / self.std])

    def predict(self, deformations) -> dict:
        x = self._design(deformations)
        out = {name: x @ c for name, c in self.coef.items() if not name.startswith('field:')}
        for name, (mean, components, shape) in self.pca.items():
            out[name] = pca_reconstruct(x @ self.coef[f'field:{name}'], mean, components).reshape(len(x), *shape)
        return out
