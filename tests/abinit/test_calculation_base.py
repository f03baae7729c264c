"""What every ABINIT CalcJob gets from the base class: the CPU-time limit on the direct scheduler, the
pseudos copied under their kind names, and one exit-code table (dry runs, no ABINIT)."""

import pathlib

import pytest
from aiida.engine import run_get_node

from aiida_mlresponse.workflows.restart import AbinitResponseBaseWorkChain, MgRelaxBaseWorkChain


def dry_run(builder, **options):
    """(folder, node) of a dry run of the builder's CalcJob with `options` over the builder's."""
    inputs = dict(builder.abinit)
    inputs['metadata'] = {'options': {**dict(builder.abinit.metadata.options), **options},
                          'dry_run': True, 'store_provenance': False}
    _, node = run_get_node(builder.process_class._process_class, **inputs)
    return pathlib.Path(node.dry_run_info['folder']), node


@pytest.mark.parametrize('kind', ['response', 'relax'])
def test_every_job_gets_the_cpu_limit_on_the_direct_scheduler(abinit_code, bn_structure, pseudo_families, kind):
    """The direct scheduler does not enforce max_wallclock_seconds: the job script sets a soft CPU limit."""
    assert abinit_code.computer.scheduler_type == 'core.direct'
    if kind == 'response':
        builder = AbinitResponseBaseWorkChain.get_builder_from_protocol(abinit_code, bn_structure, protocol='test')
    else:
        builder = MgRelaxBaseWorkChain.get_builder_from_protocol(
            abinit_code, deformation=[1.04, 0.97, 1.02, 87.0, 93.0, 91.0], protocol='test')
    folder, _ = dry_run(builder, max_wallclock_seconds=77)
    script = (folder / '_aiidasubmit.sh').read_text()
    assert 'ulimit -S -t 77' in script
    assert script.index('ulimit -S -t 77') < script.index('aiida.abi')  # set before ABINIT starts
    pseudo_dir = builder.process_class._process_class._PSEUDO_DIR
    expected = {'response': ['B.psp8', 'N.psp8'], 'relax': ['Mg.psp8']}[kind]
    assert sorted(path.name for path in (folder / pseudo_dir).iterdir()) == expected
    assert f'pseudos "{", ".join(expected)}"' in (folder / 'aiida.abi').read_text()


def test_one_line_options_refuse_newlines_but_shell_text_keeps_them(abinit_code, bn_structure, pseudo_families):
    builder = AbinitResponseBaseWorkChain.get_builder_from_protocol(abinit_code, bn_structure, protocol='test')
    for option in ('queue_name', 'account', 'scheduler_stderr'):
        with pytest.raises(ValueError, match=f'metadata.options.{option}.*newlines'):
            dry_run(builder, **{option: 'debug\nrm -rf ~'})
    folder, _ = dry_run(builder, prepend_text='export A=1\nexport B=2')
    assert 'export A=1\nexport B=2' in (folder / '_aiidasubmit.sh').read_text()

