"""What the session state machines share: building events, checking roles, states and reasons."""

from __future__ import annotations

import hashlib
from typing import Any, Protocol

from schemas.canonical import canonical_json
from schemas.events import NewEvent
from server.domain import errors as E


class _Actor(Protocol):
    @property
    def role(self) -> str: ...
    @property
    def id(self) -> str: ...


class _Command(Protocol):
    @property
    def actor(self) -> _Actor: ...


class _State(Protocol):
    @property
    def status(self) -> str: ...


def event(type_: str, actor: _Actor, audience: list[str], **payload: Any) -> NewEvent:
    return NewEvent(
        type=type_, actor=f"{actor.role}:{actor.id}", audience=audience, payload=payload
    )


def require_role(cmd: _Command, *roles: str) -> None:
    if cmd.actor.role not in roles:
        raise E.NotPermitted(f"{cmd.actor.role} may not {type(cmd).__name__}")


def require_state(state: _State, *allowed: str) -> None:
    if state.status not in allowed:
        raise E.NotAllowedInState(f"status is {state.status}")


def reason_text(text: str) -> str:
    text = text.strip()
    if not text:
        raise E.ReasonRequired()
    return text


def sha256_json(value: Any) -> str:
    return hashlib.sha256(canonical_json(value)).hexdigest()
