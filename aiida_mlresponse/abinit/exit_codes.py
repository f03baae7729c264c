"""The one exit-code table of the package's ABINIT jobs and of their restart work chains.

Every ABINIT CalcJob defines every code of `CALCULATION_EXIT_CODES` (same number, same meaning
everywhere), so a handler or a query filtering on a status can trust it. 3xx: output files missing,
unreadable or cut short; 4xx: the run failed or its results fail a check.

Numbers taken elsewhere, never reused with another meaning in the package:
    aiida-core CalcJob       100-160 (120 ERROR_SCHEDULER_OUT_OF_WALLTIME: the scheduler's walltime kill)
    aiida-core restart base  301 ERROR_SUB_PROCESS_EXCEPTED, 302 ERROR_SUB_PROCESS_KILLED,
                             401 ERROR_MAXIMUM_ITERATIONS_EXCEEDED, 402 ERROR_UNHANDLED_FAILURE
    restart work chains      300 ERROR_UNRECOVERABLE_FAILURE (`RESTART_EXIT_CODES`)
    training CalcJob         350, 351, 480 (models/calculation.py)
aiida-core's labels keep their numbers (ERROR_INVALID_OUTPUT is 10: the engine itself returns it).
Free for the package's other processes: 352-369, 380-399 (files) and 489-499 (run failures); 370-379 are the
stress-strain work chains' (`STRESS_STRAIN_EXIT_CODES`), 481-485 the labelling and active-learning
work chains (and 488: a configuration no run could take), 486-487 the Raman work chain.
tests/abinit/test_exit_codes.py checks every registered process against this.
"""

from __future__ import annotations

# status, label, message, invalidates_cache (a cached node with this status must not be reused)
CALCULATION_EXIT_CODES = (
    (303, 'ERROR_OUTPUT_INCOMPLETE', 'The ABINIT output stops before the end of the run (killed or crashed).', True),
    (304, 'ERROR_MISSING_OUTPUT_FILES', 'ABINIT did not write {files}.', True),
    (305, 'ERROR_UNREADABLE_OUTPUT', 'An ABINIT output file could not be read: {error}', True),
    (400, 'ERROR_OUT_OF_WALLTIME', 'The calculation ran out of walltime (or of its CPU-time limit).', True),
    (405, 'ERROR_ABINIT', 'ABINIT stopped with an error: {error}', True),
    (410, 'ERROR_SCF_NOT_CONVERGED', 'The ground-state SCF did not converge within nstep iterations.', False),
    (411, 'ERROR_RESPONSE_NOT_CONVERGED', 'A response (ddk / DFPT) dataset did not converge within nstep iterations.',
     False),
    (420, 'ERROR_RELAXATION_NOT_CONVERGED',
     'The relaxation stopped with max force {force:.3g} > tolmxf {tolmxf:.3g} Ha/Bohr.', False),
    (430, 'ERROR_GRID_MISMATCH', 'A field is not on the requested grid: {error}', False),
    (440, 'ERROR_SYMMETRIC_FORM_BROKEN', 'The relaxed positions left the symmetric form by {deviation:.3g}.', False),
    (450, 'ERROR_INTEGRAL_CHECK_FAILED', 'A field integral check failed: {error}', False),
    (460, 'ERROR_NO_GAP', 'The ground state has no gap ({gap_ev} eV): response properties of a metal are '
                          'meaningless; use a denser k-grid or check the structure.', False),
    (470, 'ERROR_UNPHYSICAL_OUTPUT', 'The parsed results are not physical: {error}', False),
)

RESTART_EXIT_CODES = (
    (300, 'ERROR_UNRECOVERABLE_FAILURE', 'The calculation failed with an error no handler can fix.', False),
)


def define_exit_codes(spec, table) -> None:
    """Add every code of `table` to a process spec."""
    for status, label, message, invalidates_cache in table:
        spec.exit_code(status, label, message=message, invalidates_cache=invalidates_cache)

# The stress-strain work chains (workflows/stress_strain.py, workflows/stress_strain_dft.py): 370-379.
STRESS_STRAIN_EXIT_CODES = (
    (370, 'ERROR_MODEL_NOT_PCAMLP', 'The model node is not a PCA-MLP committee (kind {kind}).', False),
    (371, 'ERROR_PATH_NOT_CONVERGED', 'The free-stress relaxation did not converge at strains {strains}.', False),
    (372, 'ERROR_DFT_REFERENCE_FAILED', 'The DFT reference labelling failed: {message}', False),
    (373, 'ERROR_DFT_EQUILIBRIUM_FAILED', 'The ABINIT run of the DFT equilibrium failed: {message}', False),
)
