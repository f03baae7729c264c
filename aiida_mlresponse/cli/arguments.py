"""Command-line values that name a node or a file: one clear line for every bad value, never a traceback.

A value is a node only when it is a pk (digits) or a uuid (hex with dashes, 8 to 36 characters); anything
else is a file name, so a path that does not exist is reported as a missing file, not looked up as a label.
"""

from __future__ import annotations

import pathlib
import re

import click

UUID = re.compile(r'[0-9a-fA-F]{8}(-?[0-9a-fA-F]{1,4}){0,4}[0-9a-fA-F]*')


def is_node_identifier(value: str) -> bool:
    return value.isdigit() or (UUID.fullmatch(value) is not None and len(value) <= 36)


def load_node(value: str, node_class, what: str):
    """The node of pk/uuid `value`, checked to be a `node_class` (`what` names it in messages)."""
    if not is_node_identifier(value):
        raise click.ClickException(f'{value!r} is not a {what} pk or uuid.')
    from aiida import load_profile, orm
    from aiida.common.exceptions import MultipleObjectsError, NotExistent

    load_profile()  # no profile: one line from `cli.OneLineErrors`
    try:
        node = orm.load_node(pk=int(value)) if value.isdigit() else orm.load_node(uuid=value)
    except NotExistent:
        raise click.ClickException(f'no node with {"pk" if value.isdigit() else "uuid"} {value}.') from None
    except MultipleObjectsError:
        raise click.ClickException(f'uuid prefix {value} matches several nodes: give more of it.') from None
    if not isinstance(node, node_class):
        raise click.ClickException(f'node {value} is a {type(node).__name__}, not a {what}.')
    return node


def existing_file(value, what: str) -> pathlib.Path:
    """`value` as the path of a readable, non-empty file."""
    path = pathlib.Path(value)
    if not path.exists():
        raise click.ClickException(f'{what} {path} does not exist.')
    if not path.is_file():
        raise click.ClickException(f'{what} {path} is not a file.')
    if path.stat().st_size == 0:
        raise click.ClickException(f'{what} {path} is empty.')
    return path


def read_model_file(value):
    """(model, checkpoint dict) of a model file; a file that is not one, or that asks to unpickle anything but
    plain data (code, objects), is refused in one line and nothing in it runs."""
    import pickle
    import warnings
    import zipfile

    from aiida_mlresponse.ml import checkpoint

    path = existing_file(value, 'model file')
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            return checkpoint.load(path)
    except pickle.UnpicklingError as exc:
        if 'GLOBAL' in str(exc):
            raise click.ClickException(f'model file {path} refused: it asks to import Python objects or run code '
                                       '(a model file holds only tensors and JSON); nothing was loaded.') from None
        raise click.ClickException(f'{path} is not an aiida-mlresponse model file.') from None
    except (ValueError, KeyError, TypeError, RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        reason = str(exc).strip().splitlines()[0].strip('\'"') if str(exc).strip() else type(exc).__name__
        raise click.ClickException(f'{path} is not a usable aiida-mlresponse model file: {reason}') from None
