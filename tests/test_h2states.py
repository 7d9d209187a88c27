"""The proxy's state machines (``h2states``) against h2's own: from every state, every input
(and things that are not inputs) gives the same next state, the same events, the same
error and the same machine afterwards; and after a run of inputs as a request takes them."""

from __future__ import annotations

import itertools

import pytest
from h2.connection import ConnectionInputs, ConnectionState, H2ConnectionStateMachine
from h2.stream import H2StreamStateMachine, StreamInputs, StreamState

from taskmuxd.proxy.h2states import ConnectionStates, StreamStates


def outcome(machine: object, input_: object) -> tuple[object, ...]:
    try:
        events = machine.process_input(input_)  # type: ignore[attr-defined]
        result: object = [(type(e).__name__, sorted(vars(e).items(), key=str)) for e in events]
    except Exception as exc:
        result = (type(exc).__name__, str(exc))
    state = {k: v for k, v in vars(machine).items()}
    return result, sorted(state.items(), key=str)


def stream_machines(state: StreamState, client: bool | None
                    ) -> tuple[H2StreamStateMachine, H2StreamStateMachine]:
    theirs, ours = H2StreamStateMachine(3), StreamStates(3)
    for machine in (theirs, ours):
        machine.state = state
        machine.client = client
    return theirs, ours


NOT_INPUTS = ["RECV_HEADERS", None, ConnectionInputs.RECV_HEADERS]


@pytest.mark.parametrize("client", [None, False, True])
def test_every_stream_state_and_input_as_h2(client: bool | None) -> None:
    for state, input_ in itertools.product(StreamState, [*StreamInputs, *NOT_INPUTS]):
        theirs, ours = stream_machines(state, client)
        assert outcome(ours, input_) == outcome(theirs, input_), (state, input_)


def test_every_connection_state_and_input_as_h2() -> None:
    for state, input_ in itertools.product(ConnectionState,
                                           [*ConnectionInputs, "RECV_HEADERS", None]):
        theirs, ours = H2ConnectionStateMachine(), ConnectionStates()
        theirs.state = ours.state = state
        assert outcome(ours, input_) == outcome(theirs, input_), (state, input_)


def test_runs_of_inputs_as_h2() -> None:
    """A server stream's life and its errors, input after input, each step compared."""
    runs = [
        [StreamInputs.RECV_HEADERS, StreamInputs.RECV_END_STREAM, StreamInputs.SEND_HEADERS,
         StreamInputs.SEND_DATA, StreamInputs.SEND_END_STREAM, StreamInputs.RECV_DATA],
        [StreamInputs.RECV_HEADERS, StreamInputs.RECV_DATA, StreamInputs.RECV_RST_STREAM,
         StreamInputs.RECV_DATA, StreamInputs.SEND_HEADERS],
        [StreamInputs.RECV_HEADERS, StreamInputs.SEND_INFORMATIONAL_HEADERS,
         StreamInputs.SEND_HEADERS, StreamInputs.RECV_HEADERS, StreamInputs.RECV_END_STREAM,
         StreamInputs.SEND_END_STREAM, StreamInputs.RECV_WINDOW_UPDATE],
        [StreamInputs.SEND_PUSH_PROMISE, StreamInputs.RECV_HEADERS],
    ]
    for run in runs:
        theirs, ours = H2StreamStateMachine(1), StreamStates(1)
        for input_ in run:
            assert outcome(ours, input_) == outcome(theirs, input_), (run, input_)


def test_the_plain_configuration_holds_the_checked_values() -> None:
    """``h2side.plain_config``: the options as h2 checked them, read as plain attributes."""
    import h2.config

    from taskmuxd.proxy.h2side import _OPTIONS, plain_config

    for client_side, checks in [(False, False), (True, True), (False, True)]:
        checked = h2.config.H2Configuration(
            client_side=client_side, header_encoding=None if checks else "utf-8",
            validate_inbound_headers=checks, normalize_inbound_headers=not checks,
            validate_outbound_headers=checks, normalize_outbound_headers=checks,
            split_outbound_cookies=not checks)
        plain = plain_config(checked)
        assert isinstance(plain, h2.config.H2Configuration)
        assert {n: getattr(plain, n) for n in _OPTIONS} == {
            n: getattr(checked, n) for n in _OPTIONS}
        assert all(n in vars(plain) for n in _OPTIONS)  # (no descriptor in the way)
    with pytest.raises(ValueError, match="must be a bool"):  # (h2 still checks first)
        h2.config.H2Configuration(client_side="no")  # type: ignore[arg-type]
