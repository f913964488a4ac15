"""What a node is, in one word, and whether it may serve users: one rule, in Python and SQL.

The Status cell leads with ``Node.shown``; the filters, the counts, ``nodes --json`` and the
API read ``Node.shown`` and ``Node.usable``. Both are stored columns, written by the engine
wherever what they depend on changes (``sync.engine.eligibility.store_truth``), so a list
needs no per-row work and no page can show a word the filters and counts disagree with.

The rule is the table ``SHOWN_RULE`` below, read from the top; the first clause whose inputs
all match gives the word. ``node_truth`` evaluates it in Python, ``truth_columns`` turns the
very same table into SQL (one ``CASE`` per column), so the two cannot drift apart. Its inputs:

- ``status``: the stored status (the seed's rule, untouched: ``sync.models.recompute_status``);
- ``condition``: the most severe condition (``Node.condition``). Conditions are ordered from
  the most severe down and the two that stop use (host key changed, unreachable) are the two
  most severe, so this one column tells whether either holds;
- ``maintenance``: the node's flag;
- ``can_run``: whether the node's work goes on without a person: something runs, may start,
  or starts by itself when its retry is due (``sync.engine.eligibility.goes_on``). Work that
  only a person can move (cancelled, or held back by a type that is) makes it Waiting.

A node is usable exactly when the word is Ready: its status is Ready and no host key change,
outage or maintenance stops it.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import models
from django.db.models import Case, F, Q, Value, When

from nodes.choices import NodeCondition, NodeShown, NodeStatus

INPUTS = ("status", "condition", "maintenance", "can_run")


# A clause whose word is the node's status itself (Synchronizing, Installation in progress).
THE_STATUS = None


@dataclass(frozen=True)
class Clause:
    """``shown`` (``THE_STATUS``: the status's own word) when every input named in ``when``
    has one of the values listed for it."""

    shown: NodeShown | None
    when: tuple[tuple[str, tuple], ...] = ()

    def matches(self, inputs: dict) -> bool:
        return all(inputs[name] in values for name, values in self.when)

    def word(self, status: str) -> NodeShown:
        return NodeShown(status) if self.shown is THE_STATUS else self.shown


def _clause(shown: NodeShown | None, **when: tuple) -> Clause:
    unknown = set(when) - set(INPUTS)
    if unknown:
        raise ValueError(f"unknown inputs {sorted(unknown)}")
    return Clause(shown, tuple(when.items()))


SHOWN_RULE: tuple[Clause, ...] = (
    # What stops use leads, the worst first.
    _clause(NodeShown.HOST_KEY_CHANGED, condition=(NodeCondition.HOST_KEY_CHANGED.value,)),
    _clause(NodeShown.UNREACHABLE, condition=(NodeCondition.UNREACHABLE.value,)),
    _clause(NodeShown.MAINTENANCE, maintenance=(True,)),
    # Nothing stops it and its status is Ready: the only way to Ready.
    _clause(NodeShown.READY, status=(NodeStatus.READY.value,)),
    # Not Ready: what is wrong with its work, then its status while the work goes on.
    _clause(NodeShown.STUCK, condition=(NodeCondition.STUCK.value,)),
    _clause(NodeShown.FAILING, condition=(NodeCondition.FAILING.value,)),
    _clause(THE_STATUS, can_run=(True,)),
    _clause(NodeShown.WAITING),
)


@dataclass(frozen=True)
class Truth:
    shown: NodeShown
    usable: bool


def node_truth(status: str, condition: str, maintenance: bool, can_run: bool) -> Truth:
    """The word a node's Status cell leads with, and whether the node is usable."""
    inputs = {
        "status": str(status),
        "condition": str(condition or ""),
        "maintenance": bool(maintenance),
        "can_run": bool(can_run),
    }
    for clause in SHOWN_RULE:
        if clause.matches(inputs):
            shown = clause.word(inputs["status"])
            return Truth(shown, shown == NodeShown.READY)
    raise AssertionError("SHOWN_RULE ends with a clause that always matches")


def _clause_q(clause: Clause, can_run: Q) -> Q:
    q = Q()
    for name, values in clause.when:
        if name == "can_run":
            q &= can_run if True in values else ~can_run
        elif name == "maintenance":
            q &= Q(maintenance=True) if True in values else Q(maintenance=False)
        else:
            q &= Q(**{f"{name}__in": list(values)})
    return q


def _then(clause: Clause) -> F | Value:
    return F("status") if clause.shown is THE_STATUS else Value(clause.shown.value)


def truth_columns(can_run: Q) -> dict[str, Case]:
    """``shown`` and ``usable`` as SQL, from ``SHOWN_RULE``, for ``QuerySet.update`` or
    ``annotate`` on nodes. ``can_run`` is the SQL of that input (a condition on the node)."""
    # The last clause matches anything: it is the CASE's default.
    whens = [When(_clause_q(c, can_run), then=_then(c)) for c in SHOWN_RULE if c.when]
    default = next(c.shown for c in SHOWN_RULE if not c.when)
    # Usable: the Ready clause is the first that matches (none of those above it does).
    reach_ready = Q()
    for clause in SHOWN_RULE:
        if clause.shown == NodeShown.READY:
            reach_ready &= _clause_q(clause, can_run)
            break
        reach_ready &= ~_clause_q(clause, can_run)
    return {
        "shown": Case(*whens, default=Value(default.value), output_field=models.CharField()),
        "usable": Case(
            When(reach_ready, then=Value(True)),
            default=Value(False),
            output_field=models.BooleanField(),
        ),
    }
