"""Dataset schemas: every kind's columns checked, files refused with the column named, export/import round trip."""

import numpy as np
import pytest

from aiida_mlresponse.data.schema import SCHEMAS, SchemaError, get_schema, read_npz, write_npz


def response_rows(n=3, atoms=2):
    rng = np.random.default_rng(0)
    return {
        'positions': rng.normal(size=(n, atoms, 3)), 'cells': np.repeat(np.eye(3)[None] * 5.0, n, 0),
        'polarization': rng.normal(size=(n, 3)), 'dielectric_tensor': np.repeat(np.eye(3)[None] * 4.5, n, 0),
        'configuration_index': np.arange(n),
    }


def mg_rows(n=2, grid=(4, 4, 6)):
    rng = np.random.default_rng(1)
    rows = {
        'deformation': np.tile([1, 1, 1, 90, 90, 120.0], (n, 1)), 'free_energy': rng.normal(size=n),
        'band_energy': rng.normal(size=n), 'entropy_energy': rng.normal(size=n), 'fermi_energy': rng.normal(size=n),
        'volume': np.full(n, 310.0), 'stress': rng.normal(size=(n, 3, 3)), 'R': rng.normal(size=(n, 3)),
        'xred': rng.random(size=(n, 4, 3)), 'cell': np.repeat(np.eye(3)[None] * 6.0, n, 0), 'configuration_index': np.arange(n),
    }
    rows.update({name: rng.random(size=(n, *grid)).astype(np.float32) for name in ('rho', 'phi', 'u', 's')})
    return rows


def test_every_column_has_a_unit_and_every_kind_an_index():
    for kind, schema in SCHEMAS.items():
        assert 'configuration_index' in schema.required, kind
        assert all(column.unit for column in schema.columns.values()), kind


def test_valid_rows_pass_and_cast_to_stored_dtypes():
    get_schema('response').check(response_rows())
    cast = get_schema('mg_strain').cast({**mg_rows(), 'rho': mg_rows()['rho'].astype(np.float64)})
    assert cast['rho'].dtype == np.float32 and cast['configuration_index'].dtype == np.int64


@pytest.mark.parametrize('change, column', [
    (lambda r: r.pop('polarization'), 'polarization'),
    (lambda r: r.update(index=np.arange(3)), 'index'),
    (lambda r: r.update(cells=np.zeros((3, 3))), 'cells'),
    (lambda r: r.update(polarization=np.zeros((2, 3))), 'polarization'),
    (lambda r: r.update(configuration_index=np.zeros(3)), 'configuration_index'),
    (lambda r: r.update(born_charges=np.zeros((3, 5, 3, 3))), 'born_charges'),
])
def test_a_bad_column_is_named(change, column):
    rows = response_rows()
    change(rows)
    with pytest.raises(SchemaError, match=f'`{column}`'):
        get_schema('response').check(rows)


def test_unknown_kind_names_the_known_ones():
    with pytest.raises(SchemaError, match='response, mg_strain'):
        get_schema('phonons')


def test_file_round_trip_and_refusals(tmp_path):
    rows = mg_rows()
    path = write_npz(tmp_path / 'mg.npz', 'mg_strain', rows, {'ngfft': [4, 4, 6]})
    kind, arrays, attributes = read_npz(path)
    assert kind == 'mg_strain' and attributes == {'ngfft': [4, 4, 6]}
    assert all(np.array_equal(arrays[name], rows[name]) for name in rows)

    np.savez(tmp_path / 'plain.npz', **rows)
    with pytest.raises(SchemaError, match='not a dataset file'):
        read_npz(tmp_path / 'plain.npz')
    (tmp_path / 'text.npz').write_text('not numpy')
    with pytest.raises(SchemaError, match='not a readable'):
        read_npz(tmp_path / 'text.npz')

    # A file written by hand with a column renamed (the campaign's old `index`) is refused by name.
    import json
    bad = dict(rows)
    bad['index'] = bad.pop('configuration_index')
    np.savez(tmp_path / 'bad.npz', **bad, __header__=np.array(json.dumps({'kind': 'mg_strain', 'units': {}})))
    with pytest.raises(SchemaError, match='`configuration_index` is missing'):
        read_npz(tmp_path / 'bad.npz')


def test_cli_export_import_round_trip(aiida_profile, tmp_path):
    from click.testing import CliRunner

    from aiida_mlresponse.cli import cli
    from aiida_mlresponse.data.dataset import DatasetData

    node = DatasetData()
    node.set_rows('response', response_rows())
    node.base.attributes.set('symbols', ['Ga', 'As'])
    node.store()
    result = CliRunner().invoke(cli, ['dataset', 'export', str(node.pk), str(tmp_path / 'out.npz')])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli, ['dataset', 'import', str(tmp_path / 'out.npz'), '--label', 'copy'])
    assert result.exit_code == 0, result.output
    from aiida import orm

    copy = orm.load_node(int(result.output.split('<')[1].split('>')[0]))
    assert copy.kind == 'response' and copy.label == 'copy' and copy.base.attributes.get('source_uuid') == node.uuid
    assert copy.base.attributes.get('symbols') == ['Ga', 'As']
    assert np.array_equal(copy.get_array('polarization'), node.get_array('polarization'))

    rows = response_rows()
    rows['dielectric_tensor'] = rows['dielectric_tensor'][:, :2]
    np.savez(tmp_path / 'bad.npz', **rows, __header__=np.array('{"kind": "response"}'))
    result = CliRunner().invoke(cli, ['dataset', 'import', str(tmp_path / 'bad.npz')])
    assert result.exit_code != 0 and '`dielectric_tensor`' in result.output and 'Traceback' not in result.output


def test_cli_export_required_only_leaves_out_the_fields(aiida_profile, tmp_path):
    from click.testing import CliRunner

    from aiida_mlresponse.cli import cli
    from aiida_mlresponse.data.dataset import DatasetData

    node = DatasetData()
    node.set_rows('mg_strain', mg_rows())
    node.store()
    result = CliRunner().invoke(cli, ['dataset', 'export', str(node.pk), str(tmp_path / 'scalars.npz'), '--required-only'])
    assert result.exit_code == 0, result.output
    kind, arrays, attributes = read_npz(tmp_path / 'scalars.npz')
    assert kind == 'mg_strain' and attributes['uuid'] == node.uuid
    assert sorted(arrays) == sorted(get_schema('mg_strain').required)
    assert not {'rho', 'phi', 'u', 's'} & set(arrays)
    assert np.array_equal(arrays['free_energy'], node.get_array('free_energy'))
    assert 'rho' not in result.output.split('columns')[1]
