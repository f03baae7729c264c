"""`aiida-mlresponse predict MODEL STRUCTURES -o OUT`: committee predictions outside a workflow."""

from __future__ import annotations

import json
import pathlib

import click
import numpy as np

from . import cli


def load_model(identifier: str):
    """(committee, checkpoint dict) from a model file path or a ModelData pk/uuid."""
    from .arguments import is_node_identifier, load_node, read_model_file

    if pathlib.Path(identifier).exists() or not is_node_identifier(identifier):
        return read_model_file(identifier)
    from aiida_mlresponse.data.model import ModelData

    return load_node(identifier, ModelData, 'ModelData').load()


def read_structures(path: pathlib.Path, metadata: dict):
    """Positions (n, N, 3) Bohr from a radnet HDF5 file or any ASE-readable file, checked against the model."""
    cell = np.asarray(metadata['cell_bohr'])
    numbers = np.asarray(metadata['atomic_numbers'])
    from .arguments import existing_file

    existing_file(path, 'structures file')
    try:
        frames = _read_frames(path)
    except Exception as exc:  # any parser's error means the same to the user: not a structures file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise click.ClickException(f'cannot read structures from {path}: {reason}') from None
    if not frames:
        raise click.ClickException(f'{path} holds no structures.')
    for index, (frame_cell, frame_numbers, _) in enumerate(frames):
        if not np.allclose(frame_cell, cell, atol=1e-5) or list(frame_numbers) != numbers.tolist():
            raise click.ClickException(
                f'structure {index} of {path} does not have the cell and atom list the model was trained on.')
    return np.asarray([frame[2] for frame in frames]), cell, numbers


def _read_frames(path: pathlib.Path):
    """(cell, numbers, positions) in Bohr of each structure in `path`."""
    from aiida_mlresponse.physics.units import ANGSTROM_TO_BOHR

    if path.suffix in ('.h5', '.hdf5'):
        from aiida_mlresponse.ml.radnet.hdf5 import load_radnet_h5

        data = load_radnet_h5(path)
        frames = [(data.cell, data.numbers, p) for p in data.positions]
    else:
        import ase.io

        frames = [(np.array(a.cell) * ANGSTROM_TO_BOHR, a.numbers, a.positions * ANGSTROM_TO_BOHR)
                  for a in ase.io.read(path, index=':')]
    return frames


@cli.command()
@click.argument('model')
@click.argument('structures', type=click.Path(path_type=pathlib.Path))
@click.option('-o', '--output', required=True, type=click.Path(dir_okay=False, path_type=pathlib.Path),
              help='Output file: .npz (arrays) or .json.')
@click.option('--born-charges', is_flag=True, help='Also Z* by autograd (polarization models).')
def predict(model, structures, output, born_charges):
    """Predict P or ε∞ (with committee spread) for STRUCTURES with MODEL (file or ModelData pk/uuid)."""
    from aiida_mlresponse.ml.registry import predictor

    if not output.parent.is_dir():
        raise click.ClickException(f'the folder of the output file {output} does not exist.')
    committee, payload = load_model(model)
    try:
        predict_response = predictor(payload['kind'])
    except (KeyError, ValueError) as exc:
        raise click.ClickException(str(exc).strip('\'"')) from None
    positions, cell, numbers = read_structures(structures, payload['metadata'])
    arrays = predict_response(committee, payload['metadata'], positions, cell, numbers, born_charges)
    units = {'polarization': 'e/bohr^2', 'dielectric_tensor': 'dimensionless', 'born_charges': 'e'}
    if output.suffix == '.json':
        output.write_text(json.dumps({'units': units, **{k: np.asarray(v).tolist() for k, v in arrays.items()}}, indent=1))
    else:
        np.savez(output, **arrays)
    click.echo(f'{len(positions)} structures -> {output} ({", ".join(arrays)})')
