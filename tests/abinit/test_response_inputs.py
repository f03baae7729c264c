"""Bad inputs of the response CalcJob / WorkChain fail with a clear message before anything is submitted,
and good inputs produce the ABINIT input file we expect (dry run, no ABINIT)."""

import numpy as np
import pytest
from aiida import orm
from aiida.engine import run, run_get_node

from aiida_mlresponse.abinit.calculations.response import AbinitResponseCalculation
from aiida_mlresponse.abinit.inputs import AbinitInputError
from aiida_mlresponse.abinit.protocols import FCC_SHIFTS, RESPONSE_PROTOCOLS, ProtocolError, get_protocol_inputs
from aiida_mlresponse.abinit.pseudos import PseudoSetupError
from aiida_mlresponse.data import structure_from_arrays, structure_to_arrays
from aiida_mlresponse.physics.units import ANGSTROM_TO_BOHR
from aiida_mlresponse.workflows.restart import AbinitResponseBaseWorkChain

Work = AbinitResponseBaseWorkChain


def _calc_inputs(code, base_structure, **changes):
    """Inputs of the bare CalcJob from the test protocol, with some replaced."""
    builder = Work.get_builder_from_protocol(code, base_structure, protocol='test')
    inputs = dict(builder.abinit)
    inputs.update(changes)
    return inputs


def _calculations():
    return orm.QueryBuilder().append(orm.CalcJobNode).count()


def test_element_not_covered_by_any_family(abinit_code, pseudo_families):
    cell = np.eye(3) * 3.0
    structure = structure_from_arrays(cell, [[0, 0, 0], [1.5, 1.5, 1.5]], ['Ti', 'O'])
    with pytest.raises(PseudoSetupError, match='has no potential for O, Ti'):
        Work.get_builder_from_protocol(abinit_code, structure, protocol='test')


def test_overlapping_atoms(abinit_code, bn_structure, pseudo_families):
    before = _calculations()
    cell, positions, symbols, _ = structure_to_arrays(bn_structure)
    positions[1] = positions[0] + [0.1, 0.0, 0.0]
    structure = structure_from_arrays(cell, positions, symbols)
    with pytest.raises(AbinitInputError, match='overlap'):
        Work.get_builder_from_protocol(abinit_code, structure, protocol='test')
    # Also at the CalcJob's own ports, for inputs not made by the builder.
    inputs = _calc_inputs(abinit_code, bn_structure, structure=structure)
    with pytest.raises(ValueError, match='overlap'):
        run(AbinitResponseCalculation, **inputs)
    assert _calculations() == before  # nothing was submitted


@pytest.mark.parametrize('kind', ['pbc', 'flat'])
def test_non_3d_cell(abinit_code, bn_structure, pseudo_families, kind):
    cell, positions, symbols, _ = structure_to_arrays(bn_structure)
    if kind == 'flat':
        cell[2] = cell[0] + cell[1]
    structure = structure_from_arrays(cell, positions, symbols)
    if kind == 'pbc':
        structure.pbc = (True, True, False)
    with pytest.raises(AbinitInputError, match='three'):
        Work.get_builder_from_protocol(abinit_code, structure, protocol='test')


def test_unknown_protocol(abinit_code, bn_structure, pseudo_families):
    with pytest.raises(ProtocolError, match='unknown protocol `ultra`.*test, fast, moderate, precise'):
        Work.get_builder_from_protocol(abinit_code, bn_structure, protocol='ultra')


@pytest.mark.parametrize('name', ['acell', 'rprim', 'xred', 'natom', 'typat', 'ngkpt', 'shiftk', 'xangst'])
def test_reserved_structure_variables(abinit_code, bn_structure, pseudo_families, name):
    before = _calculations()
    with pytest.raises(AbinitInputError, match='set by the CalcJob'):
        Work.get_builder_from_protocol(abinit_code, bn_structure, protocol='test', overrides={'parameters': {name: 1}})
    parameters = {'ecut': 10.0, name: 1}
    inputs = _calc_inputs(abinit_code, bn_structure, parameters=orm.Dict(parameters))
    with pytest.raises(ValueError, match='set by the CalcJob'):
        run(AbinitResponseCalculation, **inputs)
    assert _calculations() == before  # nothing was submitted


@pytest.mark.parametrize('name', ['berryopt1', 'rfelfd', 'ndtset', 'getwfk3', 'kptopt'])
def test_dataset_variables_are_refused(abinit_code, bn_structure, pseudo_families, name):
    inputs = _calc_inputs(abinit_code, bn_structure, parameters=orm.Dict({'ecut': 10.0, name: 1}))
    # (ndtset is also in the shared reserved list, hence the shorter match)
    with pytest.raises(ValueError, match='set by (AbinitResponseCalculation|the CalcJob)'):
        run(AbinitResponseCalculation, **inputs)


@pytest.mark.parametrize('value', ['first\nsecond', 'say "hi"', "it's"])
def test_text_that_breaks_the_input_file(abinit_code, bn_structure, pseudo_families, value):
    with pytest.raises(AbinitInputError, match='would break the ABINIT input file'):
        Work.get_builder_from_protocol(abinit_code, bn_structure, protocol='test', overrides={'parameters': {'title': value}})
    inputs = _calc_inputs(abinit_code, bn_structure, parameters=orm.Dict({'ecut': 10.0, 'title': value}))
    with pytest.raises(ValueError, match='would break the ABINIT input file'):
        run(AbinitResponseCalculation, **inputs)


def test_other_port_checks(abinit_code, bn_structure, pseudo_families):
    before = _calculations()
    with pytest.raises(ValueError, match='give `tolvrs` with a dataset number'):
        run(AbinitResponseCalculation, **_calc_inputs(abinit_code, bn_structure, parameters=orm.Dict({'ecut': 10.0, 'tolvrs': 1e-8})))
    with pytest.raises(ValueError, match='must set `ecut`'):
        run(AbinitResponseCalculation, **_calc_inputs(abinit_code, bn_structure, parameters=orm.Dict({'nstep': 10})))
    with pytest.raises(ValueError, match='unknown `response` keys'):
        run(AbinitResponseCalculation, **_calc_inputs(abinit_code, bn_structure, response=orm.Dict({'raman': True})))
    with pytest.raises(ValueError, match='nothing to compute'):
        run(AbinitResponseCalculation, **_calc_inputs(
            abinit_code, bn_structure, response=orm.Dict({'polarization': False, 'dielectric': False})))
    inputs = _calc_inputs(abinit_code, bn_structure)
    inputs['pseudos'] = {'B': inputs['pseudos']['B']}
    with pytest.raises(ValueError, match=r"no pseudopotential given for kind\(s\) \['N'\]"):
        run(AbinitResponseCalculation, **inputs)
    kpoints = orm.KpointsData()
    kpoints.set_kpoints([[0.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match='must be a mesh'):
        run(AbinitResponseCalculation, **_calc_inputs(abinit_code, bn_structure, kpoints=kpoints))
    reference = orm.ArrayData()
    reference.set_array('polarization', np.zeros(2))
    with pytest.raises(ValueError, match='must be 3 finite numbers'):
        run(AbinitResponseCalculation, **_calc_inputs(abinit_code, bn_structure, reference_polarization=reference))
    # An odd number of electrons (a lone B atom, 3 e) cannot be a doubly occupied insulator.
    cell, positions, _, _ = structure_to_arrays(bn_structure)
    lone = structure_from_arrays(cell, positions[:1], ['B'])
    inputs = _calc_inputs(abinit_code, bn_structure, structure=lone)
    inputs['pseudos'] = {'B': inputs['pseudos']['B']}
    with pytest.raises(ValueError, match='even number of electrons'):
        run(AbinitResponseCalculation, **inputs)
    assert _calculations() == before  # nothing was submitted


def test_dry_run_writes_structure_exactly_and_datasets(abinit_code, gaas_structure, pseudo_families, tmp_path):
    """The input file of a displaced GaAs cell, without running ABINIT."""
    cell, positions, symbols, _ = structure_to_arrays(gaas_structure)
    positions[0] += [-0.013, 0.004, 0.02]  # outside the cell, must stay unwrapped
    structure = structure_from_arrays(cell, positions, symbols)
    builder = Work.get_builder_from_protocol(abinit_code, structure, protocol='fast', response={'phonons': True})
    inputs = dict(builder.abinit)
    inputs['metadata'] = {**inputs['metadata'], 'dry_run': True, 'store_provenance': False}
    _, node = run_get_node(AbinitResponseCalculation, **inputs)
    import pathlib

    folder = pathlib.Path(node.dry_run_info['folder'])
    text = (folder / 'aiida.abi').read_text()
    variables = {line.split()[0]: line.split(maxsplit=1)[1] for line in text.splitlines()}
    rprim = np.array(variables['rprim'].split(), dtype=float).reshape(3, 3)
    xred = np.array(variables['xred'].split(), dtype=float).reshape(2, 3)
    np.testing.assert_allclose(rprim, cell * ANGSTROM_TO_BOHR, atol=1e-12)
    np.testing.assert_allclose(xred @ rprim, positions * ANGSTROM_TO_BOHR, atol=1e-10)
    assert variables['chkprim'] == '0' and variables['acell'] == '1.0 1.0 1.0'
    assert variables['pseudos'] == '"Ga.psp8, As.psp8"' and variables['pp_dirpath'] == '"pseudo"'
    assert sorted(p.name for p in (folder / 'pseudo').iterdir()) == ['As.psp8', 'Ga.psp8']
    fast_gaas = get_protocol_inputs(RESPONSE_PROTOCOLS, 'fast', None, ['As', 'Ga'])
    assert variables['ngkpt'] == ' '.join(map(str, fast_gaas['kpoints']['mesh'])) and variables['nshiftk'] == '4'
    np.testing.assert_allclose(np.array(variables['shiftk'].split(), dtype=float).reshape(4, 3), FCC_SHIFTS)
    # Large-core Ga (3 e) + As (5 e): 4 occupied bands; the ground state has 2 more for the gap.
    assert variables['nband'] == '4' and variables['nband1'] == '6'
    assert variables['berryopt1'] == '-1' and variables['rfddk2'] == '1' and variables['iscf2'] == '-3'
    assert variables['rfelfd3'] == '3' and variables['rfphon3'] == '1' and variables['rfatpol3'] == '1 2'
    assert variables['getddk3'] == '2' and variables['iomode'] == '3' and variables['kptopt'] == '2'
    assert 'tolvrs1' in variables and 'tolwfr2' in variables and 'tolvrs3' in variables
    # The gap check: non-SCF bands of the DS1 density at Γ and the other time-reversal-invariant points.
    assert variables['ndtset'] == '4' and variables['jdtset'] == '1 2 3 4' and variables['iscf4'] == '-2'
    assert variables['getden4'] == '1' and variables['kptopt4'] == '0' and variables['nkpt4'] == '8'
    assert variables['nband4'] == '6' and variables['kpt4'].startswith('0.0 0.0 0.0 ') and 'tolwfr4' in variables


def test_builder_from_protocol_and_overrides(abinit_code, bn_structure, gaas_structure, pseudo_families):
    builder = Work.get_builder_from_protocol(
        abinit_code, bn_structure, protocol='moderate',
        overrides={'parameters': {'ecut': 20.0}, 'kpoints': {'mesh': [3, 3, 3], 'shifts': 'gamma'}, 'max_iterations': 2},
        reference_polarization=[0.0, 0.0, 0.01],
    )
    assert builder.abinit.parameters['ecut'] == 20.0
    mesh, offset = builder.abinit.kpoints.get_kpoints_mesh()
    assert list(mesh) == [3, 3, 3] and list(offset) == [0.0, 0.0, 0.0]
    assert 'settings' not in builder.abinit  # single shift: no kpoint_shifts
    assert builder.max_iterations.value == 2
    np.testing.assert_allclose(builder.abinit.reference_polarization.get_array('polarization'), [0, 0, 0.01])
    assert builder.abinit.pseudos['B'].element == 'B'
    # GaAs takes the pseudo family its system entry names, in every protocol.
    for protocol in ('fast', 'precise'):
        gaas = Work.get_builder_from_protocol(abinit_code, gaas_structure, protocol=protocol)
        family = orm.load_group(get_protocol_inputs(RESPONSE_PROTOCOLS, protocol, None, ['As', 'Ga'])['pseudo_family'])
        assert gaas.abinit.pseudos['Ga'].md5 == family.get_pseudo('Ga').md5
    fast = Work.get_builder_from_protocol(abinit_code, gaas_structure, protocol='fast')
    assert fast.abinit.settings['kpoint_shifts'] == FCC_SHIFTS


def test_polarization_mesh_factor_adds_a_dense_berry_phase_dataset(abinit_code, bn_structure, pseudo_families):
    """`kpoints.polarization_mesh_factor` in a protocol (or its overrides) becomes DS5: the Berry phase non-SCF
    from the DS1 density on the f x denser mesh; an invalid factor is refused before any run."""
    builder = Work.get_builder_from_protocol(abinit_code, bn_structure, protocol='test',
                                             overrides={'kpoints': {'polarization_mesh_factor': 2}})
    assert builder.abinit.settings['polarization_mesh_factor'] == 2
    inputs = dict(builder.abinit)
    inputs['metadata'] = {**inputs['metadata'], 'dry_run': True, 'store_provenance': False}
    _, node = run_get_node(AbinitResponseCalculation, **inputs)
    import pathlib

    text = (pathlib.Path(node.dry_run_info['folder']) / 'aiida.abi').read_text()
    variables = {line.split()[0]: line.split(maxsplit=1)[1] for line in text.splitlines()}
    assert variables['ndtset'] == '5' and variables['jdtset'] == '1 2 3 4 5'
    assert variables['ngkpt'] == '2 2 2' and variables['ngkpt5'] == '4 4 4'
    assert variables['iscf5'] == '-2' and variables['getden5'] == '1' and variables['berryopt5'] == '-1'
    assert variables['berryopt1'] == '-1' and 'tolwfr5' in variables
    with pytest.raises(ProtocolError, match='polarization_mesh_factor'):
        Work.get_builder_from_protocol(abinit_code, bn_structure, protocol='test',
                                       overrides={'kpoints': {'polarization_mesh_factor': 0}})
    inputs['settings'] = orm.Dict({'kpoint_shifts': FCC_SHIFTS, 'polarization_mesh_factor': 1.5})
    with pytest.raises(ValueError, match='polarization_mesh_factor'):
        run_get_node(AbinitResponseCalculation, **inputs)
