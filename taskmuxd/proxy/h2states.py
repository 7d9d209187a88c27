"""h2's state machines for a connection and its streams, their transitions looked up faster.

h2 finds each transition in a table keyed by (state, input), both enum members, and Python's
``Enum`` hashes a member by hashing its name in a Python-level ``__hash__``: two Python calls
for every input to a machine, and a request takes some ten inputs between its connection and
its stream. These subclasses look the same transitions up in a copy of h2's tables keyed by
the members' identities (members live as long as their enum: an identity stands for one
member only), then act as h2 does: the same next state, the same side effects and events,
the same closing on an error. An input the copy does not hold (an invalid transition, or
not an input at all) goes to h2's own ``process_input``, which raises as it always did.
tests/test_h2states.py holds them to h2's machines over every state and input.
"""

from __future__ import annotations

from typing import Any

import h2.stream
from h2.connection import ConnectionInputs, H2ConnectionStateMachine
from h2.events import Event
from h2.exceptions import ProtocolError
from h2.stream import H2StreamStateMachine, StreamInputs, StreamState

_STREAM_TRANSITIONS: dict[tuple[int, int], Any] = {
    (id(state), id(input_)): step for (state, input_), step in h2.stream._transitions.items()}
_CONNECTION_TRANSITIONS: dict[tuple[int, int], Any] = {
    (id(state), id(input_)): step
    for (state, input_), step in H2ConnectionStateMachine._transitions.items()}
_CLOSED = StreamState.CLOSED


class StreamStates(H2StreamStateMachine):
    def process_input(self, input_: StreamInputs) -> list[Event]:
        step = _STREAM_TRANSITIONS.get((id(self.state), id(input_)))
        if step is None:
            return super().process_input(input_)
        func, target_state = step
        previous_state = self.state
        self.state = target_state
        if func is None:
            return []
        try:
            events: list[Event] = func(self, previous_state)
        except ProtocolError:
            self.state = _CLOSED
            raise
        except AssertionError as err:  # (as h2)
            self.state = _CLOSED
            raise ProtocolError(err) from err
        return events


class ConnectionStates(H2ConnectionStateMachine):
    def process_input(self, input_: ConnectionInputs) -> list[Event]:
        step = _CONNECTION_TRANSITIONS.get((id(self.state), id(input_)))
        if step is None:
            return super().process_input(input_)
        func, target_state = step
        self.state = target_state
        if func is not None:
            events: list[Event] = func()
            return events
        return []

