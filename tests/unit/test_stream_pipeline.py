"""The stream's pipeline parts: pieces hashed in file order whatever order they come in,
and a bounded set of buffers that is never handed out twice."""

from __future__ import annotations

import functools
import hashlib
import random
import threading

import pytest

from nixos_azure_publish.errors import InternalError
from nixos_azure_publish.upload.stream import PIECE, _Buffers, _Digest


def test_pieces_completed_in_any_order_are_hashed_in_file_order():
    rng = random.Random(5)  # noqa: S311 - test data
    pieces = [rng.randbytes(1000 + i) for i in range(64)]
    order = list(range(len(pieces)))
    rng.shuffle(order)
    digest = _Digest()
    done: list[int] = []

    def add(indexes: list[int]) -> None:
        for index in indexes:
            digest.add(index, memoryview(pieces[index]), functools.partial(done.append, index))

    threads = [threading.Thread(target=add, args=(order[n::4],)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert digest.hash.hexdigest() == hashlib.sha256(b"".join(pieces)).hexdigest()
    assert done == list(range(len(pieces)))  # each released as soon as it is hashed
    assert digest.hashed == len(pieces)


def test_buffers_are_bounded_taken_in_piece_order_and_never_given_twice():
    stop = threading.Event()
    buffers = _Buffers(2, pieces=5, stop=stop)
    first, second = buffers.take(), buffers.take()
    assert first is not None
    assert second is not None
    assert (first[0], second[0]) == (0, 1)
    assert len(first[1]) == PIECE
    waiting: list[tuple[int, bytearray] | None] = []
    taker = threading.Thread(target=lambda: waiting.append(buffers.take()))
    taker.start()
    taker.join(0.5)
    assert taker.is_alive()  # both buffers are out: the third piece waits
    buffers.give(first[1])
    taker.join(5)
    assert waiting[0] is not None
    assert waiting[0][0] == 2
    assert waiting[0][1] is first[1]  # reused, not a new one
    buffers.give(second[1])
    with pytest.raises(InternalError, match="given back twice"):
        buffers.give(second[1])
    stop.set()
    assert buffers.take() is None
