"""broker/server/attachment_files.py on a real directory: whole chunks only, one upload at a
time, completion only against the signed root, and the sweep's bookkeeping."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from broker.core.attachment import ABYTES, Layout, StreamingRoot
from broker.errors import FailedPrecondition, InvalidArgument
from broker.server.attachment_files import AttachmentFiles

NOTICE = "0b0f7c4e-1d2a-4c43-9e58-8a3c1d2e3f40"
LAYOUT = Layout(size=3 * 1024 + 10, chunk_size=1024, chunk_count=4)
CHUNKS = [os.urandom(LAYOUT.ciphertext_len(i)) for i in range(4)]


def root_of(chunks: list[bytes]) -> bytes:
    roots = StreamingRoot()
    for c in chunks:
        roots.add(c)
    return roots.root()


def test_an_upload_completes_only_against_the_signed_root(tmp_path: Path) -> None:
    files = AttachmentFiles(tmp_path)
    up = files.open_upload(NOTICE, 1, "photos", LAYOUT)
    assert up is not None
    try:
        for i, c in enumerate(CHUNKS):
            up.write(i, c)
        with pytest.raises(InvalidArgument, match="do not match the signed chunks_root"):
            up.finish(bytes(32))
    finally:
        up.close()
    assert files.stored_chunks(NOTICE, 1, "photos", LAYOUT) == 0  # the part file was dropped
    up = files.open_upload(NOTICE, 1, "photos", LAYOUT)
    assert up is not None
    try:
        for i, c in enumerate(CHUNKS):
            up.write(i, c)
        up.finish(root_of(CHUNKS))
    finally:
        up.close()
    done = files.complete(NOTICE, 1, "photos")
    assert done is not None and done.read_bytes() == b"".join(CHUNKS)
    assert files.open_upload(NOTICE, 1, "photos", LAYOUT) is None  # nothing left to do
    assert not files.paths(NOTICE, 1, "photos")[0].exists()


def test_a_resumed_upload_cuts_a_torn_tail_and_counts_whole_chunks(tmp_path: Path) -> None:
    files = AttachmentFiles(tmp_path)
    up = files.open_upload(NOTICE, 1, "photos", LAYOUT)
    assert up is not None
    up.write(0, CHUNKS[0])
    up.write(1, CHUNKS[1])
    up.close()
    part = files.paths(NOTICE, 1, "photos")[0]
    with part.open("ab") as f:
        f.write(CHUNKS[2][:100])  # a chunk half written when the process died
    assert files.stored_chunks(NOTICE, 1, "photos", LAYOUT) == 2
    up = files.open_upload(NOTICE, 1, "photos", LAYOUT)
    assert up is not None
    try:
        assert part.stat().st_size == 2 * (1024 + ABYTES)
        with pytest.raises(InvalidArgument, match="not the next one"):
            up.write(3, CHUNKS[3])
        with pytest.raises(InvalidArgument, match="its signed descriptor says"):
            up.write(2, CHUNKS[2][:-1])
        up.write(2, CHUNKS[2])
        up.write(3, CHUNKS[3])
        up.finish(root_of(CHUNKS))  # the root covers the chunks of both sessions
    finally:
        up.close()
    assert files.complete(NOTICE, 1, "photos") is not None


def test_two_uploads_of_one_attachment_never_interleave(tmp_path: Path) -> None:
    files = AttachmentFiles(tmp_path)
    first = files.open_upload(NOTICE, 1, "photos", LAYOUT)
    assert first is not None
    try:
        with pytest.raises(FailedPrecondition, match="another upload"):
            files.open_upload(NOTICE, 1, "photos", LAYOUT)
        other = files.open_upload(NOTICE, 1, "identity", LAYOUT)  # another attachment: free
        assert other is not None
        other.close()
    finally:
        first.close()


def test_refs_name_every_attachment_and_remove_deletes_its_files(tmp_path: Path) -> None:
    files = AttachmentFiles(tmp_path)
    assert list(files.refs()) == []
    for section in ("photos", "identity"):
        up = files.open_upload(NOTICE, 2, section, LAYOUT)
        assert up is not None
        up.write(0, CHUNKS[0])
        up.close()
    assert sorted(files.refs()) == [(NOTICE, 2, "identity"), (NOTICE, 2, "photos")]
    assert files.remove(NOTICE, 2, "photos")
    assert not files.remove(NOTICE, 2, "photos")
    assert list(files.refs()) == [(NOTICE, 2, "identity")]


def test_no_name_a_caller_sends_becomes_a_path(tmp_path: Path) -> None:
    files = AttachmentFiles(tmp_path / "att")
    part, done = files.paths("../../etc/passwd", 1, "../x")
    assert part.parent.parent == done.parent.parent == tmp_path / "att"
    assert ".." not in str(part.relative_to(tmp_path))
