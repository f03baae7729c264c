"""Pseudopotential families installed from the files Debian's `abinit-data` ships.

aiida-pseudo's own `install pseudo-dojo` downloads from the web; this machine (and many HPC login
nodes) has no internet, so the families are built from `/usr/share/abinit/psp`. The folders there
hold two Mg files (Mg and Mg-low), so each family names its files element by element.
"""

from __future__ import annotations

import pathlib
import shutil
import tempfile

PSP_ROOT = pathlib.Path('/usr/share/abinit/psp')

FAMILIES = {
    # PseudoDojo NC scalar-relativistic v0.4, LDA (PW), standard accuracy: semicore Ga 3d, As 3d, Mg 2s2p.
    'mlresponse/PseudoDojo/0.4/LDA/SR/standard/psp8': {
        'folder': 'Pseudodojo_nc_sr_04_pw_standard_psp8',
        'files': {'B': 'B.psp8', 'N': 'N.psp8', 'Ga': 'Ga.psp8', 'As': 'As.psp8', 'Mg': 'Mg.psp8'},
    },
    # Same table, large-core variants (Ga 3 e, As 5 e, Mg 2 e): much cheaper, used by the fast protocols.
    'mlresponse/PseudoDojo/0.4/LDA/SR/largecore/psp8': {
        'folder': 'Pseudodojo_nc_sr_04_pw_largecore_psp8',
        'files': {'Ga': 'Ga-low.psp8', 'As': 'As.psp8', 'Mg': 'Mg.psp8'},
    },
}


class PseudoSetupError(RuntimeError):
    """The pseudopotential files are missing from this machine."""


def family_source_files(label: str, psp_root: pathlib.Path = PSP_ROOT) -> dict[str, pathlib.Path]:
    """Element -> file of a family, with a clear error when `abinit-data` is not installed."""
    spec = FAMILIES[label]
    folder = psp_root / spec['folder']
    files = {element: folder / name for element, name in spec['files'].items()}
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        raise PseudoSetupError(
            f'pseudopotential files for family `{label}` are missing: {", ".join(missing)}. '
            'Install them with `apt-get install -y abinit-data`.'
        )
    return files


def install_families(psp_root: pathlib.Path = PSP_ROOT) -> list[tuple[str, bool]]:
    """Create every family that does not exist yet; return (label, created) pairs. Idempotent."""
    from aiida import orm
    from aiida_pseudo.data.pseudo import Psp8Data
    from aiida_pseudo.groups.family import PseudoPotentialFamily

    results = []
    for label in FAMILIES:
        files = family_source_files(label, psp_root)
        if orm.QueryBuilder().append(PseudoPotentialFamily, filters={'label': label}).count():
            results.append((label, False))
            continue
        with tempfile.TemporaryDirectory() as tmp:
            for element, path in files.items():
                shutil.copy(path, pathlib.Path(tmp) / f'{element}.psp8')
            family = PseudoPotentialFamily.create_from_folder(pathlib.Path(tmp), label, pseudo_type=Psp8Data)
            family.description = f'PseudoDojo NC SR v0.4 LDA psp8 from {psp_root / FAMILIES[label]["folder"]}'
        results.append((label, True))
    return results


def get_family(label: str):
    """The installed family `label`, or an error that says how to install it."""
    from aiida import orm
    from aiida_pseudo.groups.family import PseudoPotentialFamily

    try:
        return orm.QueryBuilder().append(PseudoPotentialFamily, filters={'label': label}).one()[0]
    except Exception as exc:
        raise PseudoSetupError(
            f'pseudopotential family `{label}` is not installed: run `aiida-mlresponse setup`.'
        ) from exc


def pseudos_for_structure(structure, family_label: str) -> dict:
    """kind name -> pseudo node, with a clear error for elements the family does not cover."""
    family = get_family(family_label)
    elements = {kind.symbol for kind in structure.kinds}
    covered = set(family.elements)
    missing = sorted(elements - covered)
    if missing:
        raise PseudoSetupError(
            f'the pseudopotential family `{family_label}` has no potential for {", ".join(missing)} '
            f'(it covers {", ".join(sorted(covered))}).'
        )
    return family.get_pseudos(structure=structure)
