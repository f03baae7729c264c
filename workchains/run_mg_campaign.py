"""Active-learning campaign, mg (see `aiida_mlresponse.workflows.campaigns` for the preset):

    verdi run workchains/run_mg_campaign.py [--protocol fast] [--budget N] [--seed 0] [--daemon]
        [--dataset PK] [--test-dataset PK] [--pool N]
"""

from aiida_mlresponse.workflows.campaigns import launch

launch('mg')
