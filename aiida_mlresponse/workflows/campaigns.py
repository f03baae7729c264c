"""Ready-made active-learning campaigns: BN and GaAs displacements (radnet), strained Mg (PCA-MLP).

`campaign_builder(system, abinit_code, training_code, protocol=..., budget=...)` returns an
`ActiveLearningWorkChain` builder whose initial sample and candidate pool are made by the sampler
calcfunctions (their seeds on record). The pool is wider than the initial sample, so the campaign
can reach configurations the first committee has not seen: displacements up to 3σ, deformations past
the paper's training box. The launch scripts in `workchains/` are a few lines over this.
"""

from __future__ import annotations

from aiida import orm

from aiida_mlresponse.data import structure_from_arrays
from aiida_mlresponse.physics import crystals
from aiida_mlresponse.workflows.active_learning import ActiveLearningWorkChain
from aiida_mlresponse.workflows.labels import sample_deformation_configurations, sample_displacement_configurations

CAMPAIGNS = {
    'bn': {'model_kind': 'radnet', 'structure': crystals.bn_cubic, 'sigma': 0.01, 'initial': 8, 'pool': 2000,
           'pool_sigma': 0.03, 'batch_size': 4, 'budget': 24, 'max_rounds': 4, 'max_concurrent': 2},
    'gaas': {'model_kind': 'radnet', 'structure': crystals.gaas, 'sigma': 0.01, 'initial': 8, 'pool': 2000,
             'pool_sigma': 0.03, 'batch_size': 4, 'budget': 24, 'max_rounds': 4, 'max_concurrent': 2},
    # the paper's box is σ_λ = 0.05, σ_θ = 3° truncated at 2σ; the pool reaches 2 x 0.07 and 2 x 4.5°
    'mg': {'model_kind': 'pcamlp', 'initial': 40, 'sigma_lambda': 0.05, 'sigma_theta': 3.0, 'pool': 4000,
           'pool_sigma_lambda': 0.07, 'pool_sigma_theta': 4.5, 'batch_size': 8, 'budget': 200, 'max_rounds': 20,
           'max_concurrent': 3},
}


def campaign_builder(system: str, abinit_code, training_code, protocol: str = 'fast', budget: int | None = None,
                     seed: int = 0, initial: int | None = None, dataset=None, pool: int | None = None, **settings):
    """An `ActiveLearningWorkChain` builder for `system` (bn, gaas, mg); `initial` replaces the preset's size of the
    initial sample, `pool` its number of candidates; with `dataset` (a `DatasetData` of earlier labels) the campaign
    starts from those labels instead of labelling an initial sample; `settings` override the preset's work-chain
    inputs (batch_size, max_rounds, trust, hyperparameters, test_dataset, ...)."""
    if system not in CAMPAIGNS:
        raise ValueError(f'unknown campaign `{system}`; known: {", ".join(CAMPAIGNS)}.')
    preset = dict(CAMPAIGNS[system], **({'initial': initial} if initial else {}), **({'pool': pool} if pool else {}))
    builder = ActiveLearningWorkChain.get_builder()
    builder.labelling.code = abinit_code
    builder.labelling.protocol = orm.Str(protocol)
    builder.labelling.max_concurrent = orm.Int(preset['max_concurrent'])
    builder.model_kind = orm.Str(preset['model_kind'])
    builder.training_code = training_code
    if dataset is not None:
        builder.dataset = dataset
    if preset['model_kind'] == 'radnet':
        reference = structure_from_arrays(*preset['structure']())
        builder.labelling.reference = reference
        if dataset is None:
            builder.initial = sample_displacement_configurations(reference, orm.Float(preset['sigma']), orm.Int(preset['initial']), orm.Int(seed))
        builder.pool = sample_displacement_configurations(reference, orm.Float(preset['pool_sigma']), orm.Int(preset['pool']), orm.Int(seed + 1))
    else:
        builder.labelling.warm_start = orm.Bool(True)
        if dataset is None:
            builder.initial = sample_deformation_configurations(orm.Int(preset['initial']), orm.Int(seed),
                                                                orm.Float(preset['sigma_lambda']), orm.Float(preset['sigma_theta']))
        builder.pool = sample_deformation_configurations(orm.Int(preset['pool']), orm.Int(seed + 1),
                                                         orm.Float(preset['pool_sigma_lambda']), orm.Float(preset['pool_sigma_theta']))
    builder.batch_size = orm.Int(preset['batch_size'])
    builder.budget = orm.Int(budget or preset['budget'])
    builder.max_rounds = orm.Int(preset['max_rounds'])
    nodes = {bool: orm.Bool, int: orm.Int, float: orm.Float, dict: orm.Dict, list: orm.List, str: orm.Str}
    for key, value in settings.items():
        builder[key] = nodes[type(value)](value) if type(value) in nodes else value
    builder.metadata.label = f'{system} campaign, {protocol}, seed {seed}'
    return builder


#: CalcJobs whose finished runs a restarted campaign reuses instead of running again (AiiDA caching)
CACHED_CALCULATIONS = ('aiida.calculations:mlresponse.abinit.response', 'aiida.calculations:mlresponse.abinit.mg_relax',
                       'aiida.calculations:mlresponse.train')


def enable_caching() -> list[str]:
    """Turn on caching of the package's CalcJobs for the current profile (a campaign run again after a
    hard stop reuses every finished ABINIT run and training); returns the identifiers added."""
    from aiida.manage import get_manager
    from aiida.manage.configuration import get_config

    config, profile = get_config(), get_manager().get_profile()
    enabled = list(config.get_option('caching.enabled_for', scope=profile.name))
    added = [identifier for identifier in CACHED_CALCULATIONS if identifier not in enabled]
    if added:
        config.set_option('caching.enabled_for', enabled + added, scope=profile.name)
        config.store()
    return added


def load_dataset(identifier: str, option: str):
    """The `DatasetData` node named by a pk or uuid on the command line, or SystemExit with one line saying why."""
    import click

    from aiida_mlresponse.cli.arguments import load_node
    from aiida_mlresponse.data.dataset import DatasetData

    try:
        return load_node(identifier, DatasetData, 'dataset')
    except click.ClickException as exc:
        raise SystemExit(f'{option}: {exc.message}') from None


def launch(system: str, argv=None):
    """The body of the `workchains/run_<system>_campaign.py` scripts: parse options, run or submit, print."""
    import argparse

    from aiida.engine import run_get_node, submit

    from aiida_mlresponse.workflows.provenance import campaign_rounds

    parser = argparse.ArgumentParser(description=f'Active-learning campaign: {system}')
    parser.add_argument('--protocol', default='fast', help='ABINIT protocol of the labels (test, fast, moderate, precise)')
    parser.add_argument('--budget', type=int, default=None, help=f'DFT labels in all, a starting --dataset\'s included (default {CAMPAIGNS[system]["budget"]})')
    parser.add_argument('--batch-size', type=int, default=None,
                        help=f'labels picked per round (default {CAMPAIGNS[system]["batch_size"]})')
    parser.add_argument('--initial', type=int, default=None,
                        help=f'size of the initial sample (default {CAMPAIGNS[system]["initial"]})')
    parser.add_argument('--pool', type=int, default=None,
                        help=f'candidate configurations (default {CAMPAIGNS[system]["pool"]})')
    parser.add_argument('--dataset', default=None,
                        help='PK or UUID of a dataset of earlier labels to start from (no initial sample is labelled)')
    parser.add_argument('--test-dataset', default=None,
                        help='PK or UUID of a held-out dataset: test MAE and max in every round\'s record')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--code', default='abinit@localhost')
    parser.add_argument('--training-code', default='mlresponse-python@localhost')
    parser.add_argument('--daemon', action='store_true', help='submit to the daemon and return')
    args = parser.parse_args(argv)
    datasets = {name: load_dataset(getattr(args, name), f'--{name.replace("_", "-")}')
                for name in ('dataset', 'test_dataset') if getattr(args, name)}
    added = enable_caching()
    if added:
        print(f'caching enabled for {", ".join(added)} in this profile (`verdi config show caching.enabled_for`): '
              'a campaign started again reuses finished ABINIT runs and trainings')
    builder = campaign_builder(system, orm.load_code(args.code), orm.load_code(args.training_code),
                               protocol=args.protocol, budget=args.budget, seed=args.seed, initial=args.initial,
                               pool=args.pool, **datasets, **({'batch_size': args.batch_size} if args.batch_size else {}))
    if args.daemon:
        node = submit(builder)
        print(f'submitted {node.process_label}<{node.pk}>; follow it with `verdi process report {node.pk}` and '
              f'`aiida-mlresponse campaign show {node.pk}`')
        return node
    results, node = run_get_node(builder)
    print(f'{node.process_label}<{node.pk}> {"finished" if node.is_finished_ok else "failed"}: '
          f'{results.get("stop_reason").value if "stop_reason" in results else node.exit_message}')
    for row in campaign_rounds(node):
        errors = row.get('test_errors', {})
        print(f'  round {row["round"]}: {row["labels"]} labels, {row["fraction_below_lo"]:.3f} of the pool below lo, '
              f'{row["picked"]} picked, {row["rejected"]} rejected, overhead {row["overhead_fraction"]:.2f}'
              + ''.join(f', test {c} MAE {e["mae"]:.3g} max {e["max"]:.3g}' for c, e in errors.items() if isinstance(e, dict)))
    if 'dataset' in results:
        print(f'dataset <{results["dataset"].pk}>; models: '
              + ', '.join(f'{t} <{m.pk}>' for t, m in results['models'].items())
              + f'; `aiida-mlresponse provenance calcs {results["dataset"].pk}` lists the ABINIT runs behind it')
    return node
