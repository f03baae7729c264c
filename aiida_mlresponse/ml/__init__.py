"""The model families (`radnet/`, `pcamlp/`) and what they share: `common` (standardization, Voigt),
`checkpoint` (the model-file format), `registry` (the model kinds), `train_entry` (the training command).
No aiida here: this layer takes and returns arrays.
"""
