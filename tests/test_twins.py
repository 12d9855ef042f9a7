"""Twins: same shape, exist nowhere, and map back exactly."""

from __future__ import annotations

import gzip
import re
import zlib

import pytest

from tollhouse.proxy.codings import accepted as accepted_encodings
from tollhouse.proxy.twins import StreamRestorer, Twins, query_ids, twin


@pytest.mark.parametrize(
    "object_id",
    [
        "asst_abc123XYZ456def789GHI0",
        "thread_abcdefghijklmnopqrstuvwx",
        "file-AbCdEf0123456789",
        "vsfb_0123456789abcdef",
        "msg_lowercase0123",
        "run_xyzw",
        "nounderscore",
    ],
)
def test_a_twin_has_the_shape_of_its_original(object_id: str) -> None:
    made = {twin(object_id) for _ in range(50)}
    assert object_id not in made
    assert len(made) > 40  # fresh every time (short ids may repeat)
    cut = max(object_id.rfind("_"), object_id.rfind("-")) + 1
    for other in made:
        assert len(other) == len(object_id)
        assert other[:cut] == object_id[:cut]
        assert re.fullmatch(r"[A-Za-z0-9]*", other[cut:])


def test_paths_queries_and_bodies_map_both_ways() -> None:
    twins = Twins(["thread_secret000001", "asst_secret00000002"])
    made = twins.of["thread_secret000001"]
    assert twins.path("/v1/threads/thread_secret000001/runs") == f"/v1/threads/{made}/runs"
    assert twins.path("/v1/threads/thread_secret00000%31/runs") == f"/v1/threads/{made}/runs"
    assert twins.path("/v1/threads/thread_mine/runs") == "/v1/threads/thread_mine/runs"
    query = twins.query("limit=5&after=thread_secret000001&order=asc&x=thread_secret000001")
    assert query == f"limit=5&after={made}&order=asc&x={made}"
    answer = f'{{"message": "No thread found with id \'{made}\'."}}'.encode()
    assert (
        twins.restore(answer) == b'{"message": "No thread found with id \'thread_secret000001\'."}'
    )
    assert gzip.decompress(twins.restore(gzip.compress(answer), b"gzip")) == twins.restore(answer)
    assert zlib.decompress(twins.restore(zlib.compress(answer), b"deflate")) == twins.restore(
        answer
    )


@pytest.mark.parametrize(
    ("query", "cursors", "others"),
    [
        ("", [], []),
        ("after=a&before=b", ["a", "b"], []),
        ("limit=2&after=", [], []),
        ("after=x%5Fy", ["x_y"], []),
        ("after=a&after=b", ["a", "b"], []),
        ("after=+msg_abcdefgh12", ["msg_abcdefgh12"], []),
        ("run_id=run_abcdefgh12&order=asc", [], ["run_abcdefgh12"]),
        ("purpose=assistants", [], []),
    ],
)
def test_query_ids(query: str, cursors: list[str], others: list[str]) -> None:
    assert query_ids(query) == (cursors, others)


def test_query_values_are_replaced_whatever_their_name_and_blanks() -> None:
    twins = Twins(["run_abcdefgh12"])
    made = twins.of["run_abcdefgh12"]
    assert twins.query("run_id=+run_abcdefgh12&x=1") == f"run_id={made}&x=1"


@pytest.mark.parametrize("cut", range(1, 40))
def test_a_stream_cut_anywhere_is_restored_whole(cut: int) -> None:
    twins = Twins(["file-abcdefgh1234"])
    made = twins.of["file-abcdefgh1234"]
    stream = f'data: {{"file_id": "{made}", "again": "{made}"}}\n\n'.encode()
    restorer = StreamRestorer(twins)
    pieces = [stream[i : i + cut] for i in range(0, len(stream), cut)]
    out = b"".join(restorer.feed(piece) for piece in pieces) + restorer.end()
    assert out == stream.replace(made.encode(), b"file-abcdefgh1234")


@pytest.mark.parametrize(
    ("offered", "kept"),
    [
        (b"gzip, deflate", b"gzip, deflate"),
        (b"gzip, deflate, br, zstd", b"gzip, deflate"),
        (b"br", b"identity"),
        (b"gzip;q=0.5, br;q=1.0", b"gzip;q=0.5"),
    ],
)
def test_twinned_requests_ask_only_for_encodings_that_can_be_mapped_back(
    offered: bytes, kept: bytes
) -> None:
    assert accepted_encodings(offered) == kept
