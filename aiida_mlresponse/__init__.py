"""aiida-mlresponse: ABINIT labels, machine-learned response committees and derived properties with provenance."""

__version__ = '0.1.0'
