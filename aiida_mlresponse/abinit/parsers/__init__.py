"""Parsers of the package's ABINIT CalcJobs: `base.AbinitParser` and its subclasses `response`, `relax`."""
