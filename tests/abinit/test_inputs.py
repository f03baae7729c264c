"""The shared ABINIT input writer: structures exactly as given, bad input refused with a clear error."""

import numpy as np
import pytest

from aiida_mlresponse.abinit.inputs import (
    AbinitInputError, format_value, structure_variables, validate_cell_and_positions, validate_parameters, write_input,
)
from aiida_mlresponse.physics.crystals import bn_cubic
from aiida_mlresponse.physics.units import ANGSTROM_TO_BOHR


def test_structure_written_exactly_as_given():
    cell, positions, symbols = bn_cubic()
    positions = positions + np.array([[0.01, -0.02, 0.003], [1.5, 0.0, 0.0]])  # displaced, outside the cell
    variables = structure_variables(cell, positions, symbols, ['B', 'N'], [5, 7])
    rprim = np.array(variables['rprim'])
    np.testing.assert_allclose(rprim, cell * ANGSTROM_TO_BOHR)
    np.testing.assert_allclose(np.array(variables['xred']) @ rprim, positions * ANGSTROM_TO_BOHR, atol=1e-12)
    assert variables['typat'] == [1, 2] and variables['chkprim'] == 0
    text = write_input(variables)
    assert 'xred' in text and 'acell 1.0 1.0 1.0' in text


@pytest.mark.parametrize('name', ['acell', 'rprim', 'xred', 'xcart', 'ngkpt', 'natom', 'typat', 'znucl', 'xred2', 'acell:'])
def test_reserved_variables_refused(name):
    with pytest.raises(AbinitInputError, match='set by the CalcJob'):
        validate_parameters({name: 1})


@pytest.mark.parametrize('value', ['a\nb', 'say "hi"', "it's", 'x # comment'])
def test_text_that_breaks_the_input_is_refused(value):
    with pytest.raises(AbinitInputError, match='break the ABINIT input'):
        validate_parameters({'title': value})


def test_nan_and_bad_names_refused():
    with pytest.raises(AbinitInputError, match='non-finite'):
        validate_parameters({'ecut': float('nan')})
    with pytest.raises(AbinitInputError, match='not a valid ABINIT variable'):
        validate_parameters({'ec ut': 10})


def test_nested_values_and_booleans():
    assert format_value([[1, 2], [3.5, True]]) == '1 2 3.5 1'
    assert format_value(np.eye(2)) == '1.0 0.0 0.0 1.0'


def test_overlapping_atoms_and_flat_cell_refused():
    cell, positions, _ = bn_cubic()
    with pytest.raises(AbinitInputError, match='overlap'):
        validate_cell_and_positions(cell, np.array([[0, 0, 0], [0.1, 0, 0]]))
    # an atom on top of a periodic image of another
    with pytest.raises(AbinitInputError, match='overlap'):
        validate_cell_and_positions(cell, np.array([[0, 0, 0], cell[0] + 0.05]))
    flat = cell.copy()
    flat[2] = flat[0] + flat[1]
    with pytest.raises(AbinitInputError, match='not three-dimensional'):
        validate_cell_and_positions(flat, positions)
    with pytest.raises(AbinitInputError, match='periodic in three'):
        validate_cell_and_positions(cell, positions, pbc=(True, True, False))
    validate_cell_and_positions(cell, positions)
