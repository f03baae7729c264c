"""AbinitResponseParser on recorded ABINIT 9.6 outputs (tests/data/abinit_response, netCDF gzipped).

bn_sheared: BN in a strained and rotated cell with displaced atoms (no symmetric matrix anywhere, so a
transposed conversion would show), test protocol with phonons. gaas_displaced: GaAs large-core, ecut 10,
4x4x4 four-shift grid, As moved along x. The Cartesian tensors ABINIT prints in its main output are the
reference for our own conversion of the DDB.

Gap check (tests/abinit/data/gap_check, test protocol, recorded with the CalcJob's own input file, aiida.abi):
gaas_paper: LDA large-core GaAs at the paper's PBE lattice (a = 10.866 Bohr): the four-shift grid gap is
1.8 eV but the bands nearly touch at Γ (0.029 eV); gaas_relaxed: the same at the LDA lattice (0.63 eV at Γ);
bn_relaxed: only its gap-bands GSR. The two older cases were recorded before the gap dataset existed: they get
the gap-bands GSR of the same system's run at the relaxed lattice (only the gap check reads it).
"""


import gzip
import pathlib
import re

import numpy as np
import pytest
from aiida import orm
from aiida.common.links import LinkType

from aiida_mlresponse.abinit.calculations.response import AbinitResponseCalculation as Calc
from aiida_mlresponse.abinit.parsers.base import abinit_error_message, unconverged_datasets
from aiida_mlresponse.abinit.parsers.response import AbinitResponseParser
from aiida_mlresponse.physics.polarization import polarization_quanta

DATA = pathlib.Path(__file__).parents[1] / 'data' / 'abinit_response'
GAP_DATA = pathlib.Path(__file__).parent / 'data' / 'gap_check'
TEXT_FILES = ('aiida.abo', 'aiida.log')
NETCDF_FILES = (Calc.GSR_FILE, Calc.GAP_GSR_FILE, Calc.DDB_NC_FILE, Calc.DDB_FILE, Calc.OUT_NC_FILE)
GAP_BANDS_OF = {'bn_sheared': 'bn_relaxed', 'gaas_displaced': 'gaas_relaxed'}


def recorded(case: str) -> dict[str, bytes]:
    folder = GAP_DATA / case if (GAP_DATA / case).is_dir() else DATA / case
    files = {}
    for path in sorted(folder.glob('*.gz')):
        files[path.name[:-3]] = gzip.decompress(path.read_bytes())
    if case in GAP_BANDS_OF and Calc.GSR_FILE in files:
        gap_gsr = (GAP_DATA / GAP_BANDS_OF[case] / f'{Calc.GAP_GSR_FILE}.gz').read_bytes()
        files[Calc.GAP_GSR_FILE] = gzip.decompress(gap_gsr)
    return files


def abo_tensor(text: str, title: str) -> dict[tuple[int, int, int, int], float]:
    """Elements (dir1, pert1, dir2, pert2) -> real part of a tensor block printed in the .abo."""
    start = text.index(title)
    elements = {}
    for line in text[start:start + 6000].splitlines()[1:]:
        match = re.match(r'^\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\S+)\s+(\S+)\s*$', line)
        if match:
            elements[tuple(int(x) for x in match.groups()[:4])] = float(match.group(5))
        elif line.strip() and not line.strip().startswith(('j1', 'dir', '(from', 'if specified', 'Effective charges')):
            break
    return elements


def abo_polarization(text: str) -> np.ndarray:
    block = text[text.index('Polarization in cartesian coordinates (a.u.)'):]
    return np.array([float(x) for x in re.search(r'Total:\s+(\S+)\s+(\S+)\s+(\S+)', block).groups()])


@pytest.fixture
def parse(aiida_localhost, tmp_path):
    """Parse a set of output files as if a calculation with the given inputs had retrieved them."""

    def _parse(files: dict[str, bytes], response=None, reference=None, exit_status=None):
        node = orm.CalcJobNode(computer=aiida_localhost, process_type='aiida.calculations:mlresponse.abinit.response')
        node.set_option('resources', {'num_machines': 1})
        node.set_option('parser_name', 'mlresponse.abinit.response')
        inputs = {'parameters': orm.Dict({'ecut': 12.0})}
        if response is not None:
            inputs['response'] = orm.Dict(response)
        if reference is not None:
            array = orm.ArrayData()
            array.set_array('polarization', np.asarray(reference, dtype=float))
            inputs['reference_polarization'] = array
        for label, data in inputs.items():
            data.store()
            node.base.links.add_incoming(data, link_type=LinkType.INPUT_CALC, link_label=label)
        if exit_status is not None:
            node.set_exit_status(exit_status)
        node.store()
        retrieved = orm.FolderData()
        temporary = tmp_path / 'temporary'
        temporary.mkdir(exist_ok=True)
        for name, content in files.items():
            if name in NETCDF_FILES:
                (temporary / name).write_bytes(content)
            else:
                retrieved.base.repository.put_object_from_bytes(content, name)
        retrieved.base.links.add_incoming(node, link_type=LinkType.CREATE, link_label='retrieved')
        retrieved.store()
        results, process = AbinitResponseParser.parse_from_node(
            node, store_provenance=False, retrieved_temporary_folder=str(temporary)
        )
        return results, process

    return _parse


ALL = {'polarization': True, 'dielectric': True, 'phonons': True}


@pytest.mark.parametrize('case', ['bn_sheared', 'gaas_displaced'])
def test_tensors_match_abinit_printout(parse, case):
    files = recorded(case)
    text = files['aiida.abo'].decode()
    results, process = parse(files, response=ALL)
    assert process.is_finished_ok, process.exit_message
    arrays = results['output_arrays']
    natom = 2

    eps_abo = abo_tensor(text, 'Dielectric tensor, in cartesian coordinates')
    eps = arrays.get_array('dielectric_tensor')
    expected = np.array([[eps_abo[(a, natom + 2, b, natom + 2)] for b in (1, 2, 3)] for a in (1, 2, 3)])
    np.testing.assert_allclose(eps, expected, atol=2e-6)
    np.testing.assert_allclose(eps, eps.T, atol=1e-4 * np.abs(eps).max())  # ε∞ symmetric

    # (displacement dir, atom, field dir, natom+2) in the .abo; ours is Z*[atom, field, displacement].
    z_abo = abo_tensor(text, '(from electric field response)')
    z_raw = arrays.get_array('born_charges_raw')
    expected = np.array([[[z_abo[(beta, kappa, alpha, natom + 2)] for beta in (1, 2, 3)] for alpha in (1, 2, 3)]
                         for kappa in (1, 2)])
    np.testing.assert_allclose(z_raw, expected, atol=2e-6)
    z = arrays.get_array('born_charges')
    np.testing.assert_allclose(z.sum(axis=0), 0.0, atol=1e-12)  # acoustic sum rule imposed
    np.testing.assert_allclose(z - z_raw, -z_raw.mean(axis=0, keepdims=True) * np.ones((2, 1, 1)), atol=1e-14)
    assert results['output_parameters']['born_charges_asr_violation'] == pytest.approx(np.abs(z_raw.sum(0)).max())

    fc_abo = abo_tensor(text, 'Dynamical matrix, in cartesian coordinates')
    fc = arrays.get_array('force_constants_gamma')
    expected = np.array([[[[fc_abo[(a, k, b, l)] for b in (1, 2, 3)] for l in (1, 2)] for a in (1, 2, 3)] for k in (1, 2)])
    np.testing.assert_allclose(fc, expected, atol=2e-6)

    masses = {'bn_sheared': [10.811, 14.0067], 'gaas_displaced': [69.723, 74.92159]}[case]
    np.testing.assert_allclose(arrays.get_array('atomic_masses'), masses, rtol=1e-4)
    np.testing.assert_allclose(arrays.get_array('polarization'), abo_polarization(text), atol=1e-8)
    for name, units in [('polarization', 'e/Bohr^2'), ('dielectric_tensor', 'dimensionless'), ('born_charges', 'e'),
                        ('force_constants_gamma', 'Ha/Bohr^2'), ('forces', 'Ha/Bohr')]:
        assert arrays.base.attributes.get(f'{name}_units') == units
    params = results['output_parameters'].get_dict()
    etotal = float(re.search(r'etotal1\s+(\S+)', text).group(1))
    assert params['total_energy'] == pytest.approx(etotal, abs=1e-9)
    if case == 'bn_sheared':  # nband1 = occupied + 2 (what the CalcJob writes): the grid gap is known
        assert params['band_gap_grid'] > 0 and params['band_gap_grid_units'] == 'eV' and params['lumo'] > params['homo']
        assert params['band_gap'] <= params['band_gap_grid']
    else:  # recorded by hand with occupied bands only: no LUMO, no grid gap; the gap bands give the gap
        assert 'band_gap_grid' not in params and 'homo' in params
        assert params['band_gap'] == pytest.approx(params['band_gap_kpoints'])
    assert params['unconverged_datasets'] == []


def test_polarization_branch_fixed_against_reference(parse):
    files = recorded('bn_sheared')
    printed = abo_polarization(files['aiida.abo'].decode())
    abi = (DATA / 'bn_sheared' / 'aiida.abi').read_text()
    cell = np.array(re.search(r'rprim ([^\n]+)', abi).group(1).split(), dtype=float).reshape(3, 3)
    quanta = polarization_quanta(cell)
    reference = printed + quanta[0] - 2 * quanta[2] + 1e-4  # the reference sits on another branch
    results, process = parse(files, response=ALL, reference=reference)
    assert process.is_finished_ok
    fixed = results['output_arrays'].get_array('polarization')
    np.testing.assert_allclose(fixed, printed + quanta[0] - 2 * quanta[2], atol=1e-8)
    np.testing.assert_allclose(results['output_arrays'].get_array('polarization_as_printed'), printed, atol=1e-8)
    assert results['output_parameters']['polarization_branch_reference'] is True


def test_only_requested_responses_are_parsed(parse):
    files = recorded('bn_sheared')
    results, process = parse(files, response={'polarization': True, 'dielectric': True, 'phonons': False})
    assert process.is_finished_ok
    names = set(results['output_arrays'].get_arraynames())
    assert {'polarization', 'dielectric_tensor', 'forces'} <= names
    assert not names & {'born_charges', 'force_constants_gamma'}


def test_missing_output_files(parse):
    _, process = parse({}, response=ALL)
    assert process.exit_status == Calc.exit_codes.ERROR_MISSING_OUTPUT_FILES.status


def test_missing_netcdf(parse):
    files = recorded('bn_sheared')
    del files[Calc.GSR_FILE]
    _, process = parse(files, response=ALL)
    assert process.exit_status == Calc.exit_codes.ERROR_MISSING_OUTPUT_FILES.status
    assert Calc.GSR_FILE in process.exit_message


def test_unreadable_netcdf(parse):
    files = recorded('bn_sheared')
    files[Calc.DDB_NC_FILE] = files[Calc.DDB_NC_FILE][:1000]  # truncated
    _, process = parse(files, response=ALL)
    assert process.exit_status == Calc.exit_codes.ERROR_UNREADABLE_OUTPUT.status


def test_abinit_error_block(parse):
    files = recorded('error_nband')
    _, process = parse(files, response=ALL)
    assert process.exit_status == Calc.exit_codes.ERROR_ABINIT.status
    assert 'not enough bands' in process.exit_message and 'm_dtset.F90' in process.exit_message
    assert 'not enough bands' in abinit_error_message(files['aiida.log'].decode())


def test_truncated_output_and_walltime(parse):
    files = recorded('bn_sheared')
    text = files['aiida.abo'].decode()
    files['aiida.abo'] = text[: text.index('== DATASET  3')].encode()
    _, process = parse(dict(files), response=ALL)
    assert process.exit_status == Calc.exit_codes.ERROR_OUTPUT_INCOMPLETE.status
    # The same truncated output after the scheduler reported a walltime kill.
    _, process = parse(dict(files), response=ALL, exit_status=Calc.exit_codes.ERROR_SCHEDULER_OUT_OF_WALLTIME.status)
    assert process.exit_status == Calc.exit_codes.ERROR_OUT_OF_WALLTIME.status
    # ... or after the soft CPU limit the CalcJob sets on the direct scheduler stopped ABINIT.
    files['_scheduler-stderr.txt'] = b"line 9: 123 CPU time limit exceeded '/usr/bin/abinit' 'aiida.abi'\n"
    _, process = parse(dict(files), response=ALL)
    assert process.exit_status == Calc.exit_codes.ERROR_OUT_OF_WALLTIME.status


NSTEP_WARNING = '\n scprqt:  WARNING -\n  nstep=   30 was not enough SCF cycles to converge;\n'


@pytest.mark.parametrize('dataset, exit_code', [(1, 'ERROR_SCF_NOT_CONVERGED'), (3, 'ERROR_RESPONSE_NOT_CONVERGED')])
def test_unconverged_cycles(parse, dataset, exit_code):
    files = recorded('bn_sheared')
    text = files['aiida.abo'].decode()
    marker = f'== DATASET  {dataset} '
    position = text.index('\n', text.index(marker))
    files['aiida.abo'] = (text[:position] + NSTEP_WARNING + text[position:]).encode()
    assert unconverged_datasets(files['aiida.abo'].decode()) == [dataset]
    results, process = parse(files, response=ALL)
    assert process.exit_status == getattr(Calc.exit_codes, exit_code).status
    assert results['output_parameters']['unconverged_datasets'] == [dataset]  # outputs kept for inspection


def test_no_gap(parse, tmp_path):
    import netCDF4

    files = recorded('bn_sheared')
    path = tmp_path / 'gsr.nc'
    path.write_bytes(files[Calc.GSR_FILE])
    with netCDF4.Dataset(path, 'a') as ds:
        eig = ds.variables['eigenvalues'][:]
        eig[..., 4:] = eig[..., :4].max() - 0.01  # empty bands pushed below the valence-band top
        ds.variables['eigenvalues'][:] = eig
    files[Calc.GSR_FILE] = path.read_bytes()
    results, process = parse(files, response=ALL)
    assert process.exit_status == Calc.exit_codes.ERROR_NO_GAP.status
    assert results['output_parameters']['band_gap'] < 0


def test_gap_check_fires_at_the_paper_lattice(parse):
    """LDA large-core GaAs at the PBE lattice: the four-shift grid sees a wide gap, Γ sees the bands touch."""
    from aiida_mlresponse.abinit.parsers.response import MIN_BAND_GAP_EV

    results, process = parse(recorded('gaas_paper'))
    assert process.exit_status == Calc.exit_codes.ERROR_NO_GAP.status
    params = results['output_parameters'].get_dict()
    assert params['band_gap_grid'] > 1.5  # what the grid-only check saw: it let this run through
    assert 0.0 < params['direct_gap_gamma'] < MIN_BAND_GAP_EV
    assert params['band_gap'] == pytest.approx(params['direct_gap_gamma'])
    assert 'dielectric_tensor' in results['output_arrays'].get_arraynames()  # kept for inspection


def test_gap_check_passes_at_the_lda_lattice(parse):
    results, process = parse(recorded('gaas_relaxed'))
    assert process.is_finished_ok, process.exit_message
    params = results['output_parameters'].get_dict()
    assert params['direct_gap_gamma'] > 0.5 and params['band_gap'] == pytest.approx(params['direct_gap_gamma'])
    assert params['band_gap_grid'] > params['band_gap']


def test_band_inversion_at_gamma_gives_no_gap(parse, tmp_path):
    """The s-like conduction state below the p-like valence triplet at Γ: by band count the gap is inside the
    triplet (0), so the run fails even though every other k-point has a gap."""
    import netCDF4

    files = recorded('gaas_relaxed')
    path = tmp_path / 'gap_gsr.nc'
    path.write_bytes(files[Calc.GAP_GSR_FILE])
    with netCDF4.Dataset(path, 'a') as ds:
        kpoints = ds.variables['reduced_coordinates_of_kpoints'][:]
        gamma = int(np.flatnonzero(np.abs(kpoints).max(axis=1) < 1e-8)[0])
        eig = ds.variables['eigenvalues'][:]
        valence_top = eig[0, gamma, 3]
        eig[0, gamma, 1:5] = [valence_top - 0.0014, valence_top, valence_top, valence_top]  # s below the triplet
        ds.variables['eigenvalues'][:] = eig
    files[Calc.GAP_GSR_FILE] = path.read_bytes()
    results, process = parse(files)
    assert process.exit_status == Calc.exit_codes.ERROR_NO_GAP.status
    assert results['output_parameters']['direct_gap_gamma'] == pytest.approx(0.0, abs=1e-9)


def test_missing_gap_bands(parse):
    files = recorded('gaas_relaxed')
    del files[Calc.GAP_GSR_FILE]
    _, process = parse(files)
    assert process.exit_status == Calc.exit_codes.ERROR_MISSING_OUTPUT_FILES.status
