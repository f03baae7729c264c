"""Main job: a cubic-BN active-learning campaign, then the Raman spectrum from its committees against DFT.

    verdi run workchains/run_bn_raman_campaign.py [--protocol fast] [--budget 12] [--initial 6] [--batch-size 3]
                                                 [--seed 0] [--reference dft|off] [--plot-dir outputs]

1. `ActiveLearningWorkChain` (workflows/campaigns.py preset `bn`): ABINIT labels (Berry-phase P, DFPT ε∞) of an initial
   sample of displaced cells, then rounds of training the P and ε∞ radnet committees (`TrainingCalculation`),
   scoring a wider candidate pool by the committees' spread and labelling the most uncertain picks, until the
   label budget is spent. Its reports show each round (labels, spreads, picks).
2. `RamanWorkChain` on the last round's committees: DFPT phonons at Γ of the equilibrium cell, ML ε∞, Z* and ∂χ/∂τ
   (autograd, every member for the band), LO-TO and the powder spectrum; with `--reference dft` the same from
   ABINIT alone (∂χ/∂τ from two displaced runs, by symmetry) and ML - DFT.
It prints the TO and LO frequencies and the peak table (ML ± band, DFT, experiment), the campaign node, the
provenance commands and the path of the spectrum plot. Finished ABINIT runs and trainings are reused (AiiDA caching)
when the job is run again.
"""

import argparse
import pathlib
import time

from aiida import orm
from aiida.engine import run_get_node

from aiida_mlresponse.workflows.campaigns import campaign_builder, enable_caching
from aiida_mlresponse.workflows.provenance import campaign_rounds
from aiida_mlresponse.workflows.raman import RamanWorkChain, summary_lines

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument('--protocol', default='fast', help='ABINIT protocol of every DFT run (test, fast, moderate)')
parser.add_argument('--budget', type=int, default=12, help='DFT labels of the campaign in all')
parser.add_argument('--initial', type=int, default=6, help='labels of the initial sample')
parser.add_argument('--batch-size', type=int, default=3, help='picks per round')
parser.add_argument('--seed', type=int, default=0)
parser.add_argument('--reference', default='dft', choices=('dft', 'off'))
parser.add_argument('--code', default='abinit@localhost')
parser.add_argument('--training-code', default='mlresponse-python@localhost')
parser.add_argument('--plot-dir', default='outputs', help='where the spectrum PNG is written')
args = parser.parse_args()

began = time.monotonic()
enable_caching()
code = orm.load_code(args.code)
builder = campaign_builder('bn', code, orm.load_code(args.training_code), protocol=args.protocol, budget=args.budget,
                           seed=args.seed, initial=args.initial, batch_size=args.batch_size)
print(f'== 1/2 active learning: cubic BN, protocol {args.protocol}, {args.initial} initial labels, '
      f'{args.batch_size} per round, budget {args.budget}')
results, campaign = run_get_node(builder)
if not campaign.is_finished_ok:
    raise SystemExit(f'{campaign.process_label}<{campaign.pk}> failed: {campaign.exit_status} {campaign.exit_message}')
print(f'campaign {campaign.process_label}<{campaign.pk}>: {results["stop_reason"].value} '
      f'({(time.monotonic() - began) / 60:.1f} min)')
for row in campaign_rounds(campaign):
    print(f'  round {row["round"]}: {row["labels"]} labels, {row["fraction_below_lo"]:.3f} of the pool below lo, '
          f'{row["picked"]} picked, {row["rejected"]} rejected')

print(f'== 2/2 Raman: committees {", ".join(f"{t} <{m.pk}>" for t, m in results["models"].items())}, '
      f'reference {args.reference}')
raman = RamanWorkChain.get_builder()
raman.structure = builder.labelling.reference
raman.models = {'polarization': results['models']['polarization'], 'dielectric': results['models']['dielectric']}
raman.code = code
raman.protocol = orm.Str(args.protocol)
raman.reference = orm.Str(args.reference)
outputs, node = run_get_node(raman)
if not node.is_finished_ok:
    raise SystemExit(f'{node.process_label}<{node.pk}> failed: {node.exit_status} {node.exit_message}')

comparison = outputs['comparison'].get_dict()
lattice = outputs['lattice'].get_dict()
print(f'\nRaman of cubic BN at a = {lattice["a_angstrom"]:.4f} Å ({lattice["source"]}), {node.process_label}<{node.pk}>')
ml_peaks = outputs['ml']['peaks'].get_dict()
dft_peaks = outputs['dft']['peaks'].get_dict() if 'dft' in outputs else {}
experiment = comparison['experiment_cm1'] or {}
print(f'{"peak":<5} {"ML (cm^-1)":>18} {"DFT":>9} {"exp.":>7}   {"rel. intensity ML":>20} {"DFT":>6}')
for label, peak in ml_peaks.items():
    dft = dft_peaks.get(label, {})
    print(f'{label:<5} {peak["frequency_cm1"]:9.1f} ± {peak["frequency_cm1_spread"]:5.1f} '
          f'{dft.get("frequency_cm1", float("nan")):9.1f} {experiment.get(label, float("nan")):7.1f}   '
          f'{peak["relative_intensity"]:12.3f} ± {peak["relative_intensity_spread"]:5.3f} '
          f'{dft.get("relative_intensity", float("nan")):6.3f}')
for line in summary_lines(comparison):
    print('  ' + line)
plot_dir = pathlib.Path(args.plot_dir)
plot_dir.mkdir(parents=True, exist_ok=True)
plot = plot_dir / f'raman_BN_{node.pk}.png'
plot.write_bytes(outputs['plot'].get_content(mode='rb'))
print(f'\ncampaign node: {campaign.pk}; Raman node: {node.pk}; total {(time.monotonic() - began) / 60:.1f} min')
print(f'provenance: `aiida-mlresponse campaign show {campaign.pk}` (rounds), '
      f'`aiida-mlresponse provenance calcs {results["dataset"].pk}` (ABINIT runs behind the labels), '
      f'`verdi process status {node.pk}`')
print(f'spectrum plot: {plot}')
