"""The event-stream parser: the WHATWG rules, chunk boundaries anywhere, and its memory bound."""

from __future__ import annotations

import json

import pytest

from tollhouse.metering.sse import SSEEvent, SSEParser


def parse(*chunks: bytes, max_event_size: int | None = None) -> tuple[list[SSEEvent], int]:
    parser = SSEParser() if max_event_size is None else SSEParser(max_event_size)
    events = [event for chunk in chunks for event in parser.feed(chunk)]
    return events, parser.dropped


def E(data: str, event: str = "message") -> SSEEvent:
    return SSEEvent(event, data)


RULES = [
    ("one event", b"event: a\ndata: x\n\n", [E("x", "a")]),
    ("default type is message", b"data: x\n\n", [E("x")]),
    ("data lines join with newline", b"data: a\ndata: b\ndata:\n\n", [E("a\nb\n")]),
    ("one space is stripped", b"data:  two\n\n", [E(" two")]),
    ("no space after the colon", b"data:x\n\n", [E("x")]),
    ("only the first colon splits", b"data: a: b\n\n", [E("a: b")]),
    ("a field without colon has empty value", b"data\n\n", [E("")]),
    ("empty data still dispatches", b"data:\n\n", [E("")]),
    ("no data, no dispatch", b"event: a\n\ndata: x\n\n", [E("x")]),
    ("type resets after dispatch", b"event: a\ndata: 1\n\ndata: 2\n\n", [E("1", "a"), E("2")]),
    ("last event line wins", b"event: a\nevent: b\ndata: x\n\n", [E("x", "b")]),
    ("comments are ignored", b": ping\ndata: x\n: more\n\n", [E("x")]),
    ("a comment-only block dispatches nothing", b": keep-alive\n\n", []),
    ("unknown fields are ignored", b"id: 7\nretry: 10\nfoo: bar\ndata: x\n\n", [E("x")]),
    ("field names are case-sensitive", b"Data: x\nEVENT: y\ndata: z\n\n", [E("z")]),
    ("CRLF endings", b"event: a\r\ndata: x\r\n\r\n", [E("x", "a")]),
    ("CR endings", b"event: a\rdata: x\r\r", [E("x", "a")]),
    ("mixed endings", b"data: a\r\ndata: b\rdata: c\n\r\n", [E("a\nb\nc")]),
    ("CR CR is two line ends", b"data: x\r\rdata: y\r\r", [E("x"), E("y")]),
    ("unterminated event is not dispatched", b"data: x\n", []),
    ("unterminated line is not a field", b"data: x\n\ndata: y", [E("x")]),
    ("leading byte-order mark is stripped", b"\xef\xbb\xbfdata: x\n\n", [E("x")]),
    ("a later byte-order mark is data", b"data: \xef\xbb\xbfx\n\n", [E("\ufeffx")]),
    ("multi-byte characters", "data: é € 𝄞\n\n".encode(), [E("é € 𝄞")]),
    ("invalid UTF-8 is replaced", b"data: a\xffb\n\n", [E("a\ufffdb")]),
    (
        "JSON line separators are not line ends",
        "data: \u2028\x85\x0c\n\n".encode(),
        [E("\u2028\x85\x0c")],
    ),
    ("blank lines between events", b"\n\n\ndata: x\n\n\n", [E("x")]),
]


@pytest.mark.parametrize(("stream", "expected"), [r[1:] for r in RULES], ids=[r[0] for r in RULES])
def test_rules(stream: bytes, expected: list[SSEEvent]) -> None:
    assert parse(stream) == (expected, 0)
    assert parse(*(stream[i : i + 1] for i in range(len(stream)))) == (expected, 0)


def dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)  # as the API sends it: UTF-8, not \u escapes


def run(status: str, **extra: object) -> str:
    return dumps({"id": "run_1", "object": "thread.run", "status": status, **extra})


STREAM_EVENTS = [
    ("thread.created", dumps({"id": "thread_1", "object": "thread"})),
    ("thread.run.created", run("queued")),
    ("thread.run.queued", run("queued")),
    ("thread.run.in_progress", run("in_progress", instructions="Réponds en français €")),
    ("thread.run.step.created", dumps({"id": "step_1", "object": "thread.run.step"})),
    ("thread.message.delta", dumps({"delta": {"content": "Voilà — ça coûte 5 €"}})),
    ("thread.message.delta", dumps({"delta": {"content": "line\u2028sep 𝄞"}})),
    ("thread.run.step.delta", '{"delta":\n {"step_details": {}}}'),  # data in two lines
    ("thread.run.step.completed", dumps({"id": "step_1", "status": "completed"})),
    ("thread.run.completed", run("completed", usage={"prompt_tokens": 3})),
    ("future.event", "a\nb\nc"),
    ("done", "[DONE]"),
]


def encode_stream() -> bytes:
    """The events above, written the way servers vary: CRLF, comments, two-line data."""
    parts = [": stream opened\r\n\r\n"]
    for index, (name, data) in enumerate(STREAM_EVENTS):
        end = "\r\n" if index % 3 == 0 else "\n"
        lines = [f"event: {name}"] + [f"data: {line}" for line in data.split("\n")]
        if index == 5:
            lines.insert(1, ": keep-alive")
        parts.append(end.join(lines) + end + end)
    return "".join(parts).encode()


EXPECTED = [SSEEvent(name, data) for name, data in STREAM_EVENTS]


def test_realistic_stream_whole() -> None:
    assert parse(encode_stream()) == (EXPECTED, 0)


def test_realistic_stream_split_at_every_byte() -> None:
    stream = encode_stream()
    assert "é".encode() in stream
    assert "€".encode() in stream
    for cut in range(len(stream) + 1):
        assert parse(stream[:cut], stream[cut:]) == (EXPECTED, 0), cut


def test_realistic_stream_one_byte_at_a_time() -> None:
    stream = encode_stream()
    assert parse(*(stream[i : i + 1] for i in range(len(stream)))) == (EXPECTED, 0)


def test_realistic_stream_in_three_chunks_around_a_crlf() -> None:
    stream = encode_stream()
    crlf = stream.index(b"\r\n", 10)
    for cut in (crlf - 1, crlf, crlf + 1, crlf + 2):
        for width in (0, 1, 2, 5):
            chunks = stream[:cut], stream[cut : cut + width], stream[cut + width :]
            assert parse(*chunks) == (EXPECTED, 0), (cut, width)


def test_events_come_back_as_soon_as_they_end() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: 1\n") == []
    assert parser.feed(b"\ndata: 2") == [E("1")]
    assert parser.feed(b"\r") == []
    assert parser.feed(b"\n") == []  # the pair of the CR above, not an empty line
    assert parser.feed(b"\r") == [E("2")]


OVERSIZE = (
    b"data: small\n\n"
    b"event: big\ndata: " + b"x" * 300 + b"\ndata: tail\n\n"
    b"event: after\ndata: fine\n\n"
    b": " + b"c" * 300 + b"\n\n"
    b"data: " + b"y" * 80 + b"\ndata: " + b"z" * 80 + b"\n\n"
    b"data: last\n\n"
)


def test_oversize_events_are_dropped_and_counted() -> None:
    events, dropped = parse(OVERSIZE, max_event_size=128)
    assert events == [E("small"), E("fine", "after"), E("last")]
    assert dropped == 3


def test_oversize_events_are_dropped_the_same_wherever_the_stream_is_cut() -> None:
    whole = parse(OVERSIZE, max_event_size=128)
    for cut in range(len(OVERSIZE) + 1):
        assert parse(OVERSIZE[:cut], OVERSIZE[cut:], max_event_size=128) == whole, cut
    one_by_one = (OVERSIZE[i : i + 1] for i in range(len(OVERSIZE)))
    assert parse(*one_by_one, max_event_size=128) == whole


def test_an_event_just_under_the_limit_is_kept() -> None:
    line = b"data: " + b"x" * 50 + b"\n"  # 57 characters with its line end
    assert parse(line + b"\n", max_event_size=57) == ([E("x" * 50)], 0)
    assert parse(line + b"\n", max_event_size=56) == ([], 1)
    assert parse(line[:30], line[30:] + b"\n", max_event_size=56) == ([], 1)


def test_an_endless_line_is_dropped_once() -> None:
    parser = SSEParser(max_event_size=1024)
    for _ in range(1000):
        assert parser.feed(b"data: " + b"x" * 4096) == []
    assert parser.dropped == 1
    assert parser.feed(b"\n\ndata: next\n\n") == [E("next")]
    assert parser.dropped == 1


def test_default_limit_is_16_mib() -> None:
    parser = SSEParser()
    assert parser.max_event_size == 16 * 1024 * 1024
    big = b"x" * (16 * 1024 * 1024)
    assert parser.feed(b"data: ok\n\ndata: " + big + b"\n\ndata: ok\n\n") == [E("ok"), E("ok")]
    assert parser.dropped == 1
