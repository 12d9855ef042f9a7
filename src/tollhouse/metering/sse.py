"""Incremental parser for server-sent event streams (the WHATWG event-stream format)."""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from typing import Final

MAX_EVENT_SIZE: Final = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class SSEEvent:
    event: str
    data: str


class SSEParser:
    """Turns a byte stream, cut anywhere, into the events it carries.

    Lines end in ``\\n``, ``\\r\\n`` or ``\\r``; ``event:`` names the event (default
    ``message``), ``data:`` lines are joined with ``\\n``, lines starting with ``:`` are
    comments, other fields are ignored and an empty line dispatches the event. ``id`` and
    ``retry`` are ignored too: nothing here reconnects.

    An event whose lines (comments included, one terminator each) come to more than
    ``max_event_size`` characters is dropped as a whole and counted in ``dropped``, so a
    runaway stream cannot grow the parser's memory. Chunk boundaries change neither.
    """

    def __init__(self, max_event_size: int = MAX_EVENT_SIZE) -> None:
        self.max_event_size = max_event_size
        self.dropped = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._started = False  # a byte-order mark is stripped from the stream's start only
        self._after_cr = False  # the last chunk ended in "\r"; a "\n" opening the next is its pair
        self._partial: list[str] = []  # the current line, not yet terminated
        self._partial_size = 0
        self._event = ""
        self._data: list[str] = []
        self._size = 0  # characters of the current event's lines, comments included
        self._skipping = False  # inside an oversize event: ignore lines until it ends

    def _text(self, chunk: bytes) -> str:
        """The chunk as text with every line ending a "\\n" (a pair cut in two included)."""
        text = self._decoder.decode(chunk)
        if not text:
            return text
        if not self._started:
            self._started = True
            if text[0] == "\ufeff":
                text = text[1:]
        if self._after_cr:
            self._after_cr = False
            if text[:1] == "\n":
                text = text[1:]
        if "\r" in text:
            self._after_cr = text[-1] == "\r"
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        return text

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        text = self._text(chunk)
        if not text:
            return []
        if "\n" not in text:
            self._hold_partial(text)
            return []
        lines = text.split("\n")
        tail = lines.pop()
        if self._partial_size:
            # A line is empty (and dispatches) only if nothing of it came in earlier chunks.
            lines[0] = ":" if self._skipping else "".join(self._partial) + lines[0]
            self._partial.clear()
            self._partial_size = 0
        events: list[SSEEvent] = []
        for line in lines:
            if not line:
                self._dispatch(events)
            elif self._skipping:
                continue
            elif self._size + len(line) >= self.max_event_size:
                self._drop()
            else:
                self._size += len(line) + 1
                if line[0] != ":":
                    self._field(line)
        self._hold_partial(tail)
        return events

    def _field(self, line: str) -> None:
        name, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value

    def _hold_partial(self, text: str) -> None:
        if not text:
            return
        self._partial_size += len(text)
        if self._skipping:
            return  # only whether the line has started matters, not its content
        self._partial.append(text)
        if self._size + self._partial_size >= self.max_event_size:
            self._drop()

    def _drop(self) -> None:
        self.dropped += 1
        self._skipping = True
        self._partial.clear()
        self._data.clear()
        self._event = ""
        self._size = 0

    def _dispatch(self, events: list[SSEEvent]) -> None:
        if self._data:
            events.append(SSEEvent(self._event or "message", "\n".join(self._data)))
            self._data.clear()
        self._event = ""
        self._size = 0
        self._skipping = False
