"""setup.json (AiiDA plugin registry metadata) must agree with pyproject.toml, the source of truth."""

import ast
import json
import pathlib
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_setup_json_matches_pyproject():
    project = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']
    setup = json.loads((ROOT / 'setup.json').read_text())
    assert setup['name'] == project['name']
    assert setup['version'] == project['version']
    entry_points = {
        group: sorted(f'{name} = {target}' for name, target in points.items())
        for group, points in project['entry-points'].items()
    }
    entry_points['console_scripts'] = sorted(f'{n} = {t}' for n, t in project['scripts'].items())
    assert {group: sorted(points) for group, points in setup['entry_points'].items()} == entry_points


def test_import_layers_do_not_import_aiida():
    """physics/, ml/ and sampling/ take and return arrays; they never import aiida."""
    for layer in ('physics', 'ml', 'sampling'):
        for path in (ROOT / 'aiida_mlresponse' / layer).rglob('*.py'):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom):
                    modules = [node.module or '']
                else:
                    continue
                assert not any(m == 'aiida' or m.startswith('aiida.') for m in modules), f'{path}:{node.lineno}'
