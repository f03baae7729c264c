"""PCA + MLP committee for the strained Mg cell (seed 002): D -> F, U, -TS, R and the fields ρ, φ, u, s.

- `pca`: the PCA of a field; `network`: stacked MLPs and the quadratic features of D;
- `model`: the committee module (kind 'pcamlp'), its hyperparameters and saving;
- `fit`: `fit_pcamlp` and the training entry point's hook; `training_loop`: `FitSettings` and the stacked loop;
- `data`: the 'mg_strain' dataset columns under the model's names; `metrics`: NRMSE and position error;
- `linear`: the seed's linear-regression baseline; `synthetic`: analytic stand-in data (tests only); `plots`.
"""
