"""The client-agent wire protocol: every message kind round-trips; junk is ignored."""

from __future__ import annotations

import json

import pytest

from jobkit.scheduler.protocol import (
    MACHINE_FIELDS,
    AgentSettings,
    Event,
    LineReader,
    Op,
    Request,
    decode_event,
    decode_request,
    encode_event,
    encode_request,
    encode_status,
)

MACHINE = {"cpus": 2.0, "mem": None, "gpus": ["a100"], "max_jobs": 3}


@pytest.mark.parametrize(
    ("line", "request_"),
    [
        (encode_request(Op.CONFIGURE, machine=MACHINE, pid=42), Request(Op.CONFIGURE, MACHINE, 42)),
        (encode_request(Op.WAKE), Request(Op.WAKE)),
        (encode_request(Op.CANCEL, ids=["a", "b"]), Request(Op.CANCEL, ids=("a", "b"))),
        (encode_request(Op.PING), Request(Op.PING)),
        (encode_request(Op.STOP), Request(Op.STOP)),
    ],
    ids=lambda value: value.op.value if isinstance(value, Request) else "",
)
def test_every_request_round_trips_as_one_json_line(line: bytes, request_: Request) -> None:
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line)["op"] == request_.op.value
    assert decode_request(line.rstrip(b"\n")) == request_


def test_requests_keep_the_wire_spelling_older_agents_understand() -> None:
    assert json.loads(encode_request(Op.CANCEL, ids=["x"])) == {"op": "cancel", "ids": ["x"]}
    assert json.loads(encode_request(Op.CONFIGURE, machine=MACHINE, pid=7)) == {
        "op": "configure",
        "machine": MACHINE,
        "pid": 7,
    }
    assert json.loads(encode_request(Op.WAKE)) == {"op": "wake"}


@pytest.mark.parametrize(
    "line",
    [b"", b"not json", b"[1, 2]", b'{"op": "explode"}', b'{"ids": []}', b'{"op": 3}'],
)
def test_junk_decodes_to_none(line: bytes) -> None:
    assert decode_request(line) is None


def test_fields_of_the_wrong_type_are_dropped_not_trusted() -> None:
    assert decode_request(b'{"op": "cancel", "ids": "abc"}') == Request(Op.CANCEL)
    assert decode_request(b'{"op": "configure", "machine": [1], "pid": true}') == Request(
        Op.CONFIGURE
    )


def test_events_and_status() -> None:
    assert decode_event(encode_event(Event.DONE, "j1")) == "j1"
    assert decode_event(encode_event(Event.REQUEUED, "j2")) == "j2"
    status = encode_status(9, ["b", "a"], MACHINE)
    assert decode_event(status) is None  # a ping answer is not about a job
    assert json.loads(status) == {"pid": 9, "running": ["a", "b"], "machine": MACHINE}


def test_line_reader_keeps_partial_lines_until_complete() -> None:
    reader = LineReader()
    line = encode_event(Event.DONE, "j1")
    assert reader.feed(line[:5]) == []
    assert reader.feed(line[5:] + encode_event(Event.DONE, "j2")[:3]) == [line.rstrip(b"\n")]
    assert [decode_event(x) for x in reader.feed(encode_event(Event.DONE, "j2")[3:])] == ["j2"]


def test_agent_settings_round_trip_through_json() -> None:
    settings = AgentSettings(store="sqlite:///x.db", cpus=2.0, gpus=["a"], max_jobs=1)
    assert AgentSettings.from_json(settings.to_json()) == settings
    assert tuple(settings.machine()) == MACHINE_FIELDS
