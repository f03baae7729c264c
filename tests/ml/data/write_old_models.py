"""Written once with the code of commit be6ea65 (before ml/ was split by family): small model files of every
kind in use and their outputs on fixed inputs (tests/ml/test_old_model_files.py checks they still load and agree).

    git archive be6ea65 aiida_mlresponse | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old python tests/ml/data/write_old_models.py tests/ml/data
"""
import sys, pathlib
import numpy as np
import torch
import aiida_mlresponse.ml.checkpoint as checkpoint
assert 'tmp/old' in checkpoint.__file__, checkpoint.__file__
from aiida_mlresponse.ml.radnet import RadNet
from aiida_mlresponse.ml.committee import Committee
from aiida_mlresponse.ml import pcamlp as pm

out = pathlib.Path(sys.argv[1])
torch.manual_seed(0)
gen = torch.Generator().manual_seed(1)

def perturb(module):
    with torch.no_grad():
        for name, buffer in module.named_buffers():
            if buffer.is_floating_point():
                buffer.add_(0.1 * torch.rand(buffer.shape, generator=gen, dtype=buffer.dtype))

net = RadNet({'preset': 'tiny', 'cube_size': 5, 'n_outputs': 3})
perturb(net)
cubes = torch.rand(3, 2, 1, 5, 5, 5, generator=gen)
checkpoint.save(out / 'radnet_v2.pt', net, metadata={'note': 'written by be6ea65'})

committee = Committee({'n_members': 2, 'member': {'preset': 'tiny', 'cube_size': 5, 'n_outputs': 3,
                       'taylor': {'degree': 2, 'n_atoms': 2}}, 'density': {'n': 5, 'spacing': 0.875, 'sigma': 1.0,
                       'window_radius': 3.5, 'window_width': 0.5}, 'central': True, 'target': 'polarization'})
perturb(committee)
positions = torch.rand(3, 2, 3, generator=gen, dtype=torch.float64)
checkpoint.save(out / 'radnet_committee_v2.pt', committee, metadata={'target': 'polarization'})

data = pm.synthetic_dataset(30, grid=(3, 4, 4), seed=2)
model, history = pm.fit_pcamlp(data['D'], {k: data[k] for k in ('F', 'U', 'minus_TS', 'R')},
                               {k: data[k] for k in ('rho', 'u')}, {'n_members': 2, 'pca_components': 3,
                               'field_hidden': [8, 8], 'scalar_hidden': [8, 8]}, stress=data['stress'],
                               epochs=3, lbfgs_iterations=5, field_epochs=2, field_lbfgs_iterations=5, batch_size=16)
pm.save(out / 'pcamlp_v2.pt', model, metadata={'note': 'written by be6ea65'}, history=history)

with torch.no_grad():
    expected = {'radnet_cubes': cubes, 'radnet': net(cubes),
                'committee_positions': positions,
                'radnet_committee': committee(torch.rand(3, 2, 1, 5, 5, 5, generator=torch.Generator().manual_seed(5)), positions),
                'pcamlp_D': torch.as_tensor(data['D'][:4])}
p = model.predict(data['D'][:4])
expected.update({f'pcamlp_{k}': torch.as_tensor(v) for k, v in p.items()})
torch.save(expected, out / 'outputs_v2.pt')
print(sorted(expected), [f.stat().st_size for f in out.glob('*.pt')])
