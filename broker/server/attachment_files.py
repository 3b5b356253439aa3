"""Attachment ciphertexts on disk: one file per attachment, written in order, fsynced.

Layout under the attachments directory ([attachments] dir, else data_dir/attachments):
``<hh>/<hex>.part`` while an upload is under way and ``<hh>/<hex>.ct`` once complete, where
hex is SHA-256 of (notice id, version, section) and hh its first two characters (so no
name a caller sends becomes a path). A part file holds whole chunks only: a resumed
upload starts after the last whole chunk, cutting any torn tail. An upload completes when
the last chunk is written and fsynced and the file's Merkle root over its chunks equals the
signed header's chunks_root; then it is renamed, and the directory fsynced. Several
replicas on PostgreSQL share one directory (a network file system); an upload holds an
exclusive flock on its part file, so two uploads of one attachment never interleave.

Beside them, ``<hex>.ref`` names the attachment (notice, version, section), so that the
sweep (EvidenceService.sweep) finds the files of notices that closed or were erased and
deletes them.

Everything here blocks: the service runs it in a thread (asyncio.to_thread).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from broker.core.attachment import ABYTES, Layout, StreamingRoot
from broker.errors import FailedPrecondition, InvalidArgument

# Written chunks are flushed to the kernel at once and fdatasync'd every SYNC_BYTES (to keep
# the page cache's backlog short), and fsynced in full before the file is complete. A
# chunk counted but lost in a machine crash is simply asked for again: a client always
# resumes from GetAttachmentStatus, which counts what the file holds after the restart.
SYNC_BYTES = 16 * 1024 * 1024


def _name(notice_id: str, version: int, section: str) -> str:
    return hashlib.sha256(f"{notice_id}\x00{version}\x00{section}".encode()).hexdigest()


class AttachmentFiles:
    """The attachments directory of one broker (or of replicas sharing it)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def refs(self) -> Iterator[tuple[str, int, str]]:
        """(notice id, version, section) of every attachment with a file here."""
        if not self.root.exists():
            return
        for ref in sorted(self.root.glob("*/*.ref")):
            try:
                data = json.loads(ref.read_text())
                yield str(data["notice_id"]), int(data["version"]), str(data["section"])
            except (OSError, ValueError, KeyError, TypeError):
                continue  # half-written by a crash: its upload writes it again

    def remove(self, notice_id: str, version: int, section: str) -> bool:
        """Delete an attachment's files (part, complete, ref); True if there was one."""
        part, done = self.paths(notice_id, version, section)
        found = False
        for path in (part, done, done.with_suffix(".ref")):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                found = True
        return found

    def paths(self, notice_id: str, version: int, section: str) -> tuple[Path, Path]:
        """(part path, complete path) of one attachment."""
        name = _name(notice_id, version, section)
        folder = self.root / name[:2]
        return folder / f"{name}.part", folder / f"{name}.ct"

    def complete(self, notice_id: str, version: int, section: str) -> Path | None:
        path = self.paths(notice_id, version, section)[1]
        return path if path.exists() else None

    def stored_chunks(self, notice_id: str, version: int, section: str, layout: Layout) -> int:
        """Whole chunks held so far (all of them when complete)."""
        part, done = self.paths(notice_id, version, section)
        if done.exists():
            return layout.chunk_count
        try:
            size = part.stat().st_size
        except FileNotFoundError:
            return 0
        return min(size // (layout.chunk_size + ABYTES), layout.chunk_count - 1)

    def open_upload(
        self, notice_id: str, version: int, section: str, layout: Layout
    ) -> Upload | None:
        """Start or resume an upload; None if the attachment is complete already (another
        upload finished it); FailedPrecondition when another upload holds it."""
        part, done = self.paths(notice_id, version, section)
        part.parent.mkdir(parents=True, exist_ok=True)
        ref = done.with_suffix(".ref")  # what the sweep reads to find the notice again
        if not ref.exists():
            ref.write_text(
                json.dumps({"notice_id": notice_id, "version": version, "section": section})
            )
        handle = part.open("ab+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise FailedPrecondition(
                "another upload of this attachment is under way; retry when it ends"
            ) from None
        if done.exists():  # completed while this one waited to open: nothing to do
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
            handle.close()
            return None
        stored = self.stored_chunks(notice_id, version, section, layout)
        handle.truncate(layout.offset(stored))
        roots = StreamingRoot()  # over the chunks already held, then each one written
        handle.seek(0)
        for i in range(stored):
            roots.add(handle.read(layout.ciphertext_len(i)))
        handle.seek(0, os.SEEK_END)
        return Upload(handle, part, done, layout, stored, roots)


class Upload:
    """One upload in progress: chunks appended in order (see SYNC_BYTES)."""

    def __init__(
        self,
        handle: IO[bytes],
        part: Path,
        done: Path,
        layout: Layout,
        stored: int,
        roots: StreamingRoot,
    ) -> None:
        self.handle, self.part, self.done, self.layout = handle, part, done, layout
        self.stored, self.roots = stored, roots
        self.unsynced = 0

    def write(self, index: int, ciphertext: bytes) -> None:
        """Append chunk ``index`` (the next one) durably; InvalidArgument if it is not the
        next chunk or has the wrong length."""
        if index != self.stored:
            raise InvalidArgument(
                f"chunk {index} is not the next one: the broker holds {self.stored} chunk(s); "
                "resume from there (GetAttachmentStatus)"
            )
        if index >= self.layout.chunk_count:
            raise InvalidArgument(f"the attachment has only {self.layout.chunk_count} chunk(s)")
        want = self.layout.ciphertext_len(index)
        if len(ciphertext) != want:
            raise InvalidArgument(
                f"chunk {index} is {len(ciphertext)} bytes; its signed descriptor says {want}"
            )
        self.handle.write(ciphertext)
        self.handle.flush()
        self.roots.add(ciphertext)
        self.unsynced += len(ciphertext)
        if self.unsynced >= SYNC_BYTES:
            os.fdatasync(self.handle.fileno())
            self.unsynced = 0
        self.stored += 1

    def finish(self, chunks_root: bytes) -> None:
        """Check the whole file against the signed root and make it complete; on a
        mismatch the part file is dropped and InvalidArgument raised."""
        if self.roots.root() != chunks_root:
            self.part.unlink(missing_ok=True)
            raise InvalidArgument(
                "the uploaded chunks do not match the signed chunks_root; upload them again"
            )
        os.fsync(self.handle.fileno())
        try:
            os.replace(self.part, self.done)
        except FileNotFoundError:  # the sweep deleted it: the notice closed meanwhile
            raise FailedPrecondition(
                "the notice was closed or erased during the upload; nothing was kept"
            ) from None
        fd = os.open(self.done.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(self.handle.fileno(), fcntl.LOCK_UN)
        self.handle.close()


def read_chunk(handle: IO[bytes], layout: Layout, index: int) -> bytes:
    """Chunk ``index`` of a complete ciphertext file."""
    handle.seek(layout.offset(index))
    return handle.read(layout.ciphertext_len(index))
