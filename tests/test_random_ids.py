"""Tokens and call UUIDs come from the kernel's CSPRNG through one buffer."""

from __future__ import annotations

import os
import re
import uuid

from gateway.service import server


def test_call_uuids_are_distinct_version_4_uuids() -> None:
    seen = set()
    for _ in range(2000):  # several 4 KiB refills of the buffer
        text = server.new_call_uuid()
        value = uuid.UUID(hex=text)
        assert value.hex == text
        assert value.version == 4
        assert value.variant == uuid.RFC_4122
        seen.add(text)
    assert len(seen) == 2000


def test_tokens_are_96_bit_hex_and_never_repeat() -> None:
    tokens = [server.new_token() for _ in range(2000)]
    assert all(re.fullmatch(r"[0-9a-f]{24}", token) for token in tokens)
    assert len(set(tokens)) == len(tokens)


def test_a_forked_child_does_not_reuse_the_parents_random_bytes() -> None:
    server.new_token()  # the parent's buffer now holds unused bytes
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report its next token and leave at once
        os.write(write_end, server.new_token().encode())
        os._exit(0)
    os.close(write_end)
    child_token = os.read(read_end, 100).decode()
    os.close(read_end)
    os.waitpid(pid, 0)
    assert child_token != server.new_token()
