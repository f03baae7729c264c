"""Regenerate setup.json from pyproject.toml: `python .ci/sync_setup_json.py`."""

import json
import pathlib
import tomllib

root = pathlib.Path(__file__).resolve().parents[1]
project = tomllib.loads((root / 'pyproject.toml').read_text())['project']
entry_points = {
    group: sorted(f'{name} = {target}' for name, target in points.items())
    for group, points in project['entry-points'].items()
}
entry_points['console_scripts'] = sorted(f'{n} = {t}' for n, t in project['scripts'].items())
setup = {
    'name': project['name'],
    'version': project['version'],
    'description': project['description'],
    'author': project['authors'][0]['name'],
    'license': project['license']['text'],
    'classifiers': project['classifiers'],
    'install_requires': project['dependencies'],
    'extras_require': project['optional-dependencies'],
    'entry_points': entry_points,
}
(root / 'setup.json').write_text(json.dumps(setup, indent=4) + '\n')
