"""Launch a work chain's child once, even across a daemon kill.

aiida-core stores a submitted child, with its CALL link to the parent, before the step that submitted it ends;
the parent's checkpoint comes only after the step. A daemon killed in between leaves the child stored with its
task in the broker (it runs), and the restarted parent, back at its last checkpoint, runs the step again: at
least once, not exactly once. Looking among the parent's own called processes for the child's link label before
submitting makes the launch once.
"""

from __future__ import annotations

from aiida.common.links import LinkType


def called_by_label(workchain) -> dict:
    """call link label -> the process `workchain` has already called under it (from the database, not the context)."""
    links = workchain.node.base.links.get_outgoing(link_type=(LinkType.CALL_CALC, LinkType.CALL_WORK)).all()
    return {link.link_label: link.node for link in links}


def adopted(workchain, link_label: str, called: dict | None = None):
    """The process `workchain` already called `link_label` (reported as adopted), or None.
    `called`: `called_by_label(workchain)`, when one step launches several children."""
    node = (called_by_label(workchain) if called is None else called).get(link_label)
    if node is not None:
        workchain.report(f'{node.process_label}<{node.pk}> was launched as `{link_label}` before the last checkpoint '
                         '(daemon restarted): waiting on it instead of launching again')
    return node


def submit_once(workchain, builder, link_label: str, called: dict | None = None):
    """The child `workchain` called `link_label`: the one already launched, else `builder` submitted under it."""
    node = adopted(workchain, link_label, called)
    if node is not None:
        return node
    builder.metadata.call_link_label = link_label
    return workchain.submit(builder)
