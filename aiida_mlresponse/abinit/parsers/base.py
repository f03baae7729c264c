"""`AbinitParser`: what every parser of the package's ABINIT jobs does before reading the results.

In order: a run killed at its walltime (the scheduler's ERROR_SCHEDULER_OUT_OF_WALLTIME on the node, or
the soft CPU-time limit the CalcJob sets on the direct scheduler) -> ERROR_OUT_OF_WALLTIME, after
`parse_partial` kept what a restart can use; no text output at all -> ERROR_MISSING_OUTPUT_FILES;
ABINIT's own error message (or a Fortran runtime error, e.g. reading a corrupt pseudopotential) -> ERROR_ABINIT; an output that stops early -> ERROR_OUTPUT_INCOMPLETE.
Then the subclass reads its results (`parse_results`). Text outputs are read only to detect errors
and unconverged cycles; results come from ABINIT's netCDF files.
"""

from __future__ import annotations

import pathlib
import re

from aiida.common.links import LinkType
from aiida.engine import CalcJob
from aiida.parsers import Parser

from aiida_mlresponse.abinit.calculations.base import AbinitCalculation as Calc

_DATASET_RE = re.compile(r'^\s*== DATASET\s+(\d+)', re.MULTILINE)
_NSTEP_RE = re.compile(r'nstep=\s*\d+\s+was not enough SCF cycles to converge')
_ERROR_RE = re.compile(r'^--- !(?:ERROR|BUG)\s*\n(.*?)^\.\.\.', re.MULTILINE | re.DOTALL)
_CRASH_RE = re.compile(r'^Fortran runtime error: .*$', re.MULTILINE)
_PSP_OPENED_RE = re.compile(r'pspatm: opening atomic psp file\s+(\S+)')
_PSP_READ = 'pspatm: atomic psp has been read'
COMPLETED = 'Calculation completed'
SCHEDULER_WALLTIME = CalcJob.exit_codes.ERROR_SCHEDULER_OUT_OF_WALLTIME.status


def abinit_error_message(text: str) -> str | None:
    """The message of the first `--- !ERROR` (or `!BUG`) block of an ABINIT log/output, on one line."""
    match = _ERROR_RE.search(text)
    if not match:
        return None
    block = match.group(1)
    source = re.search(r'src_file:\s*(\S+)', block)
    message = block.split('message: |', 1)[-1]
    message = ' '.join(line.strip() for line in message.splitlines() if line.strip())
    return f'{message} ({source.group(1)})' if source else message


def crash_message(log_text: str) -> str | None:
    """A Fortran runtime error that ended ABINIT (no `--- !ERROR` block then), naming the pseudopotential file it was
    reading when the crash came before that file was read through (a corrupt or truncated file)."""
    match = _CRASH_RE.search(log_text)
    if not match:
        return None
    # stderr (the crash) and buffered stdout interleave out of order in the log: look at the whole text
    opened = list(_PSP_OPENED_RE.finditer(log_text))
    if opened and _PSP_READ not in log_text[opened[-1].end():]:
        return f'{match.group(0)} while reading the pseudopotential {opened[-1].group(1)} (corrupt or truncated?)'
    return match.group(0)


def unconverged_datasets(output_text: str) -> list[int]:
    """Datasets whose SCF (or response) cycle stopped at nstep without reaching its tolerance."""
    parts = _DATASET_RE.split(output_text)
    # parts: [preamble, '1', text1, '2', text2, ...]; the final echo of variables has no dataset header.
    return sorted({int(number) for number, text in zip(parts[1::2], parts[2::2]) if _NSTEP_RE.search(text)})


class AbinitParser(Parser):
    """Base of the package's ABINIT parsers; a subclass implements `parse_results` (and `parse_partial`)."""

    def parse(self, **kwargs):
        # `self.retrieved` and each `self.node.inputs.x` / `'x' in self.node.inputs` query the database anew: on a
        # busy daemon that was half the parse. One query each, here; subclasses use `self.repository`, `self.inputs`.
        self.repository = self.retrieved.base.repository
        self.inputs = {link.link_label: link.node
                       for link in self.node.base.links.get_incoming(link_type=LinkType.INPUT_CALC).all()}
        names = self.repository.list_object_names()
        self.output_text = self._text(Calc._OUTPUT_FILE, names)
        self.log_text = self._text(Calc._LOG_FILE, names)
        temporary = kwargs.get('retrieved_temporary_folder')
        folder = pathlib.Path(temporary) if temporary else None
        if Calc._OUTPUT_FILE not in names and Calc._LOG_FILE not in names:
            if self.out_of_walltime(names):
                return self.exit_codes.ERROR_OUT_OF_WALLTIME
            return self.exit_codes.ERROR_MISSING_OUTPUT_FILES.format(files=f'{Calc._OUTPUT_FILE} or {Calc._LOG_FILE}')
        error = abinit_error_message(self.log_text) or abinit_error_message(self.output_text) or crash_message(self.log_text)
        if error is None and Calc.ABORT_FILE in names:
            error = self._text(Calc.ABORT_FILE, names).strip()[:500] or None
        if error:
            return self.exit_codes.ERROR_ABINIT.format(error=error)
        if COMPLETED not in self.output_text:
            self.parse_partial(folder)
            return self.exit_codes.ERROR_OUT_OF_WALLTIME if self.out_of_walltime(names) else self.exit_codes.ERROR_OUTPUT_INCOMPLETE
        return self.parse_results(folder)

    def out_of_walltime(self, names) -> bool:
        """The scheduler's walltime code on the node, or the CPU-limit kill in the scheduler's stderr."""
        if self.node.exit_status == SCHEDULER_WALLTIME:
            return True
        stderr = self.node.get_option('scheduler_stderr') or '_scheduler-stderr.txt'
        return Calc.CPU_LIMIT_MESSAGE in self._text(stderr, names)

    def parse_partial(self, folder: pathlib.Path | None) -> None:
        """Outputs worth keeping from an unfinished run (e.g. the last positions a restart starts from)."""

    def parse_results(self, folder: pathlib.Path | None):
        """Read the results of a completed run; return an exit code or None."""
        raise NotImplementedError

    def _text(self, name: str, names) -> str:
        return self.repository.get_object_content(name) if name in names else ''
