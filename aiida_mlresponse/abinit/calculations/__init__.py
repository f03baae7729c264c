"""The package's ABINIT CalcJobs: `base.AbinitCalculation` and its subclasses `response`, `relax`."""
