"""The kernel both session machines share: a command table, a status table and one due list.

Theory of operation (h11's ``_state.py`` and Prozorro's chronograph, as data). A kind of session
(an opening, an evaluation) is a :class:`Machine` built from three tables its module declares:

* ``commands``: command class -> :class:`CommandRule` (who may send it, in which statuses, and
  the handler that decides the rest). :meth:`Machine.decide` looks the command up, checks the
  role and the status with the same refusals everywhere, then calls the handler.
* ``statuses``: event type -> the status it leads to. :meth:`Machine.evolve` applies it, then the
  module's own payload bookkeeping (``fold``).
* ``due``: one list of :class:`Due` entries, ``(when, fire)``. :meth:`Machine.next_due` is the
  earliest ``when``; a tick fires, in list order, the first entry that is due, until none is.
  The scheduler's question and the tick's answer come from the same list, so they cannot disagree.

Nothing here does I/O or reads a clock: ``now`` and ``at`` are handed in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from pydantic import BaseModel

from schemas.canonical import canonical_json
from schemas.events import NewEvent
from server.domain import errors as E

PAUSED = "suspended"
"""The status in which only the commands whose rule lists it are taken (an emergency pause)."""

Handler = Callable[[Any, Any, datetime], list[NewEvent]]
"""``handler(state, command, now) -> events``: the finer checks and the events of one command."""

StatusOf = str | Callable[[Any, NewEvent, "datetime | None"], str]
"""An event's resulting status: a status, or ``f(state_before, event, at) -> status``."""


class _Actor(Protocol):
    @property
    def role(self) -> str: ...
    @property
    def id(self) -> str: ...


# --- the rows of the tables -----------------------------------------------------------------------


@dataclass(frozen=True)
class CommandRule:
    """One row of a command table.

    ``roles``: the actor roles that may send the command (None: any role; a function of the
    command when the role depends on what it carries). ``states``: the statuses in which it is
    taken. ``handler``: decides the rest (None: the tick, which fires what is due).
    ``refuse(state, cmd)``: the refusal for a status not in ``states`` when the law names a more
    telling one than "not allowed at this stage" (e.g. rule 1's DEADLINE_PASSED).
    ``state_first``: check the status before the role (the committee's own commands).
    """

    roles: tuple[str, ...] | Callable[[Any], tuple[str, ...]] | None
    states: tuple[str, ...]
    handler: Handler | None
    refuse: Callable[[Any, Any], E.Refusal] | None = None
    state_first: bool = False


@dataclass(frozen=True)
class Due:
    """One row of a due list: ``when(state)`` is the instant at which ``fire(state, now)`` acts
    (None: nothing pending from this row)."""

    name: str
    when: Callable[[Any], datetime | None]
    fire: Callable[[Any, datetime], list[NewEvent]]


# --- the machine ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerMade:
    """The kind's command classes the server builds itself, and its actor model (``role``,
    ``id``) they take as ``actor``."""

    actor: type[Any]
    tick: type[Any]
    join: type[Any]
    leave: type[Any]
    signals: type[Any]
    """Recording warning signals (``signals``)."""
    link: type[Any] | None = None
    """A room device's media link (``up``); None: the kind has no room links."""
    outage: type[Any] | None = None
    """Telling a session that the platform was down (``down_from``, ``down_until``); None: the
    kind's windows do not move for outages."""


@dataclass(frozen=True)
class Machine:
    """A kind of session: its state model, its three tables, and what the server asks of it.

    The fields after the tables are the kind's own answers (constructors of its commands, who is
    present, what a viewer sees); the server calls the methods, never the fields.
    """

    kind: str
    state: type[BaseModel]
    commands: Mapping[type[Any], CommandRule]
    statuses: Mapping[str, StatusOf]
    fold: Callable[[Any, NewEvent, datetime | None, Any], None]
    due: Sequence[Due]
    paused_detail: str
    made: ServerMade
    viewer_tags_of: Callable[[Any, str, str], frozenset[str] | None]
    supervision_of: Callable[[Any], dict[str, Any]]
    before_deadline_of: Callable[[Any], bool]
    record_pending_of: Callable[[Any], bool]
    present_parties: Callable[[Any], list[tuple[str, str]]] | None = None
    """Who is present besides the staff in ``state.present`` (None: no one)."""
    kind_in_first_event: bool = True
    """Whether ``session_created`` names the kind (the opening's predates kinds: kept as it was)."""

    # --- deciding ---------------------------------------------------------------------------------

    def decide(self, state: Any, cmd: Any, now: datetime) -> list[NewEvent]:
        """The events ``cmd`` causes at ``now``, or a :class:`~server.domain.errors.Refusal`."""
        rule = self.admit(state, type(cmd), cmd.actor, cmd)
        if rule.handler is None:
            return self.fire_due(state, now)
        return rule.handler(state, cmd, now)

    def admit(self, state: Any, command: type[Any], actor: _Actor, cmd: Any = None) -> CommandRule:
        """The table's checks of ``command`` by ``actor`` in ``state``: paused, role, status."""
        rule = self.commands.get(command)
        if state.status == PAUSED and (rule is None or PAUSED not in rule.states):
            raise E.NotAllowedInState(self.paused_detail)
        if rule is None:
            raise E.NotPermitted(f"unknown command {command.__name__}")
        if rule.state_first:
            _check_state(rule, state, cmd)
            _check_role(rule, command, actor, cmd)
        else:
            _check_role(rule, command, actor, cmd)
            _check_state(rule, state, cmd)
        return rule

    # --- time -------------------------------------------------------------------------------------

    def next_due(self, state: Any) -> datetime | None:
        """The next instant at which time alone changes this session (None: nothing pending)."""
        whens = [w for d in self.due if (w := d.when(state)) is not None]
        return min(whens) if whens else None

    def fire_due(self, state: Any, now: datetime) -> list[NewEvent]:
        """Let time act: fire every entry of the due list that is due at ``now``, in list order,
        each on the state the previous ones left."""
        events: list[NewEvent] = []
        current = state
        for _ in range(10):  # each pass fires one entry; a handful is the most that can be due
            step = self._due_step(current, now)
            if not step:
                break
            events += step
            for e in step:
                current = self.evolve(current, e, now)
        return events

    def _due_step(self, state: Any, now: datetime) -> list[NewEvent]:
        for due in self.due:
            when = due.when(state)
            if when is not None and now >= when:
                events = due.fire(state, now)
                if events:
                    return events
        return []

    # --- evolving ---------------------------------------------------------------------------------

    def evolve(self, state: Any, event: NewEvent, at: datetime | None) -> Any:
        """Fold one event into the state (a copy; the input is not changed): the status table
        first, then who is present (the kernel's own events), then the kind's own bookkeeping of
        the payload (which sees the state before)."""
        s = state.model_copy(deep=True)
        to = self.statuses.get(event.type)
        if to is not None:
            s.status = to if isinstance(to, str) else to(state, event, at)
        _fold_presence(s, event)
        self.fold(s, event, at, state)
        return s

    # --- what the server asks ---------------------------------------------------------------------

    def _command(
        self, command: type[Any], role: str = "server", party_id: str = "server", **fields: Any
    ) -> Any:
        return command(actor=self.made.actor(role=role, id=party_id), **fields)

    def tick(self) -> Any:
        """The scheduler's command: let time act."""
        return self._command(self.made.tick)

    def join(self, role: str, party_id: str) -> Any:
        return self._command(self.made.join, role, party_id)

    def leave(self, role: str, party_id: str) -> Any:
        return self._command(self.made.leave, role, party_id)

    def link(self, role: str, party_id: str, up: bool) -> Any | None:
        """A room device's media link going up or down (None: this kind has no room links)."""
        if self.made.link is None:
            return None
        return self._command(self.made.link, role, party_id, up=up)

    def present(self, state: Any) -> list[tuple[str, str]]:
        """(role, party id) of every party recorded as present or linked: the staff first."""
        staff = [(role, account) for account, role in state.present.items()]
        return staff + (self.present_parties(state) if self.present_parties else [])

    def viewer_tags(self, state: Any, role: str, party_id: str) -> frozenset[str] | None:
        """The audience tags a viewer gets on the live stream (None: may not join at all)."""
        return self.viewer_tags_of(state, role, party_id)

    def supervision(self, state: Any) -> dict[str, Any]:
        """The kind's own fields in the supervisor's list of sessions."""
        return self.supervision_of(state)

    def before_deadline(self, state: Any) -> bool:
        """Rule 4: the session is still before its bid deadline."""
        return self.before_deadline_of(state)

    def record_pending(self, state: Any) -> bool:
        """Work the server must do after a restart (a record to generate)."""
        return self.record_pending_of(state)

    def outage(self, down_from: datetime, down_until: datetime) -> Any | None:
        """The server's command reporting a platform outage to a session of this kind."""
        if self.made.outage is None:
            return None
        return self._command(self.made.outage, down_from=down_from, down_until=down_until)

    def raise_signals(self, signals: list[dict[str, Any]]) -> Any:
        """The server's command recording new warning signals on a session of this kind."""
        return self._command(self.made.signals, signals=signals)


def _check_role(rule: CommandRule, command: type[Any], actor: _Actor, cmd: Any) -> None:
    roles = rule.roles(cmd) if callable(rule.roles) else rule.roles
    if roles is not None and actor.role not in roles:
        raise E.NotPermitted(f"{actor.role} may not {command.__name__}")


def _check_state(rule: CommandRule, state: Any, cmd: Any) -> None:
    if state.status not in rule.states:
        if rule.refuse is not None:
            raise rule.refuse(state, cmd)
        raise E.NotAllowedInState(f"status is {state.status}")


# --- what the handlers share ----------------------------------------------------------------------


def event(type_: str, actor: _Actor, audience: list[str], **payload: Any) -> NewEvent:
    return NewEvent(
        type=type_, actor=f"{actor.role}:{actor.id}", audience=audience, payload=payload
    )


def require_state(state: Any, *allowed: str) -> None:
    """A finer status check a handler makes itself (when the command's content decides it)."""
    if state.status not in allowed:
        raise E.NotAllowedInState(f"status is {state.status}")


def reason_text(text: str) -> str:
    text = text.strip()
    if not text:
        raise E.ReasonRequired()
    return text


def sha256_json(value: Any) -> str:
    return hashlib.sha256(canonical_json(value)).hexdigest()


def raise_signals(raised: list[str], cmd: Any, signals: list[dict[str, Any]]) -> list[NewEvent]:
    """The ``signal`` events of warnings not raised yet (both machines).

    Supervisors alone see them (the issue: "nobody else sees them"), and nothing folds them into
    the state but their ids, so no warning changes an outcome by itself."""
    seen = set(raised)
    events = []
    for signal in signals:
        ident = signal.get("id")
        if not isinstance(ident, str) or ident in seen:
            continue
        seen.add(ident)
        events.append(event("signal", cmd.actor, ["supervisor"], **signal))
    return events


# --- what every kind of session does alike ------------------------------------------------------


class _Present(Protocol):
    @property
    def present(self) -> dict[str, str]: ...


class _Presence(Protocol):
    @property
    def actor(self) -> _Actor: ...


def _fold_presence(state: _Present, event: NewEvent) -> None:
    """The bookkeeping of :func:`join` and :func:`leave`."""
    if event.type == "party_joined":
        state.present[event.payload["account"]] = event.payload["role"]
    elif event.type == "party_left":
        state.present.pop(event.payload["account"], None)


def join(state: _Present, cmd: _Presence, now: datetime) -> list[NewEvent]:
    """A staff member's first connection to the hall (rule 6 needs a supervisor present)."""
    if state.present.get(cmd.actor.id) == cmd.actor.role:
        return []
    return [event("party_joined", cmd.actor, ["staff"], account=cmd.actor.id, role=cmd.actor.role)]


def leave(state: _Present, cmd: _Presence, now: datetime) -> list[NewEvent]:
    """A staff member's last connection to the hall has gone."""
    if cmd.actor.id not in state.present:
        return []
    return [event("party_left", cmd.actor, ["staff"], account=cmd.actor.id, role=cmd.actor.role)]
