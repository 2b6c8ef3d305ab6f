"""The shared slots that carry the frames' text of the two-process ingest (pipeline/ingestion/sharedtext.py)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.ingestion.sharedtext import TextSlots

SLOTS, SLOT_BYTES = 3, 64

# put: pieces of text; release: the n-th slot still held (modulo how many are held).
_operations = st.lists(st.one_of(
    st.tuples(st.just("put"), st.lists(st.binary(max_size=40), max_size=4)),
    st.tuples(st.just("release"), st.integers(0, 10)),
), max_size=40)


@settings(max_examples=200, deadline=None)
@given(_operations)
def test_a_slot_holds_what_was_put_until_it_is_given_back(operations):
    """Against a model: a slot is handed out only while free, keeps its text whatever is put in the
    others, and comes back once released; text larger than a slot, or no slot free, gets None."""
    slots = TextSlots(SLOTS, SLOT_BYTES)
    held: dict[int, bytes] = {}  # the model: slot -> its text
    try:
        for operation, value in operations:
            if operation == "put":
                text = b"".join(value)
                slot = slots.put(value, len(text))
                fits = len(text) <= SLOT_BYTES and len(held) < SLOTS
                assert (slot is not None) == fits
                assert slots.full() == (len(held) + (slot is not None) == SLOTS)
                if slot is not None:
                    assert slot not in held
                    held[slot] = text
            elif held:
                slot = sorted(held)[value % len(held)]
                slots.release(slot)
                del held[slot]
            for slot, text in held.items():
                assert bytes(slots.view(slot, len(text))) == text
    finally:
        slots.close()


def test_the_child_sees_what_the_reader_put_and_gives_slots_back(tmp_path):
    """Across a fork, as the two-process ingest uses them: the child reads each text where the reader put
    it, and every slot it releases can be put again."""
    slots = TextSlots(2, 1024)
    texts = [os.urandom(n) for n in (10, 1024, 500, 7, 300, 1000)]
    to_child_in, to_child_out = os.pipe()
    seen = tmp_path / "seen"
    pid = os.fork()
    if pid == 0:  # the child: read (slot, size) pairs, record each text, give the slot back
        try:
            os.close(to_child_out)
            slots.as_child()
            with open(to_child_in, "rb") as orders, seen.open("wb") as out:
                while order := orders.read(4):
                    slot, size = order[0], int.from_bytes(order[1:], "big")
                    out.write(bytes(slots.view(slot, size)))
                    slots.release(slot)
        finally:
            os._exit(0)
    os.close(to_child_in)
    slots.as_reader()
    try:
        for text in texts:
            slot = slots.put([text[:3], text[3:]], len(text))
            while slot is None:  # both taken: the child gives one back soon
                slot = slots.put([text[:3], text[3:]], len(text))
            os.write(to_child_out, bytes([slot]) + len(text).to_bytes(3, "big"))
        os.close(to_child_out)
        assert os.waitpid(pid, 0)[1] == 0
        assert seen.read_bytes() == b"".join(texts)
        assert slots.put([b"x" * 1025], 1025) is None  # larger than a slot
    finally:
        slots.close()


def test_slots_are_numbered_in_one_byte():
    with pytest.raises(ValueError, match="at most 256 slots"):
        TextSlots(257, 16)
    TextSlots(256, 16).close()
