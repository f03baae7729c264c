"""Active-learning campaign, bn (see `aiida_mlresponse.workflows.campaigns` for the preset):

    verdi run workchains/run_bn_campaign.py [--protocol fast] [--budget N] [--seed 0] [--daemon]
        [--dataset PK] [--test-dataset PK] [--pool N]
"""

from aiida_mlresponse.workflows.campaigns import launch

launch('bn')
