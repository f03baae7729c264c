"""radnet (seed 000): an atom-decomposed 3-D CNN on density cubes, as a committee with closed-form heads.

- `density`: the atom-centred density cubes; `network`: the CNN (kind 'radnet');
- `taylor`: the Taylor baseline; `heads`: the frozen heads (Taylor, cube polynomial) and their fits;
- `committee`: the committee module (kind 'radnet_committee'); `fit`: how it is fitted, and the training
  entry point's hook; `training_loop`: the epoch loop with early stopping;
- `derivatives`: Z*, ∂χ/∂τ by autograd; `predict`: the fast predictions (mean, spread, Z*);
- `hdf5`: the reader of the radnet paper's HDF5 files.
"""
