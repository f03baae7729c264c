"""`aiida-mlresponse setup` pieces: pseudo families from abinit-data, idempotent, clear errors."""

import pathlib

import pytest

from aiida_mlresponse.abinit.pseudos import FAMILIES, PseudoSetupError, family_source_files, install_families


def test_families_installed_once(pseudo_families):
    from aiida_pseudo.groups.family import PseudoPotentialFamily
    from aiida import orm

    assert {label for label, _ in pseudo_families} == set(FAMILIES)
    again = install_families()
    assert all(created is False for _, created in again)
    family = orm.load_group('mlresponse/PseudoDojo/0.4/LDA/SR/largecore/psp8')
    assert isinstance(family, PseudoPotentialFamily)
    assert set(family.elements) == {'Ga', 'As', 'Mg'}
    # the large-core Ga (3 valence electrons), not the semicore one
    source = family_source_files('mlresponse/PseudoDojo/0.4/LDA/SR/largecore/psp8')['Ga']
    assert source.name == 'Ga-low.psp8'
    assert family.get_pseudo('Ga').get_content() == source.read_text()


def test_missing_pseudo_files_give_clear_error(tmp_path: pathlib.Path):
    with pytest.raises(PseudoSetupError, match='apt-get install -y abinit-data'):
        family_source_files(next(iter(FAMILIES)), psp_root=tmp_path)


def test_missing_abinit_gives_clear_error(monkeypatch):
    from aiida_mlresponse.cli.setup import SetupError, find_executables

    monkeypatch.setenv('PATH', '/nonexistent')
    with pytest.raises(SetupError, match='apt-get install -y abinit'):
        find_executables()


def test_pseudos_for_structure_rejects_uncovered_element(pseudo_families, bn_structure):
    from aiida_mlresponse.abinit.pseudos import pseudos_for_structure

    with pytest.raises(PseudoSetupError, match='no potential for B, N'):
        pseudos_for_structure(bn_structure, 'mlresponse/PseudoDojo/0.4/LDA/SR/largecore/psp8')
    pseudos = pseudos_for_structure(bn_structure, 'mlresponse/PseudoDojo/0.4/LDA/SR/standard/psp8')
    assert set(pseudos) == {'B', 'N'}


def test_local_computers_run_commands_without_a_login_shell(aiida_profile, tmp_path):
    """`without_login_shell` (what `ensure_computer` and `ensure_slurm_computer` call): the computer's transport commands
    run in a plain shell (a login shell read the start-up files at every submission and poll: 1.2 s a command on this
    machine), the other auth parameters kept, idempotent; a command through the transport still finds ABINIT. A
    computer of its own: the profile's `localhost` is shared with the other tests."""
    from aiida import orm

    from aiida_mlresponse.cli.setup import without_login_shell

    computer = orm.Computer(label='login-shell-test', hostname='localhost', transport_type='core.local',
                            scheduler_type='core.direct', workdir=str(tmp_path)).store()
    computer.configure(use_login_shell=True, safe_interval=0.0)
    authinfo = computer.get_authinfo(orm.User.collection.get_default())
    assert without_login_shell(computer) is True
    assert authinfo.get_auth_params() == {'use_login_shell': False, 'safe_interval': 0.0}
    assert without_login_shell(computer) is False
    with authinfo.get_transport() as transport:
        status, stdout, _ = transport.exec_command_wait('command -v abinit')
    assert status == 0 and stdout.strip().endswith('abinit')
