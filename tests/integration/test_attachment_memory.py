"""Memory stays constant in the file's size at every party: the originator sealing and
uploading, the broker storing and serving, the recipient downloading and opening, all in
this process under tracemalloc (Python allocations; the bytes of every chunk are Python
objects at some point). A file six times larger must not raise the peak.

``BROKER_TEST_ATTACHMENT_GIB=1`` adds a round trip of that many GiB (not in make test)."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from pathlib import Path

import pytest

from broker.client.attachments import Evidence
from tests.adversarial.kit import SECTIONS, agencies, until
from tests.integration.conftest import Running

pytestmark = pytest.mark.integration
MIB = 1024 * 1024
GIB = os.environ.get("BROKER_TEST_ATTACHMENT_GIB", "")


def write_file(path: Path, size: int) -> bytes:
    h = hashlib.sha256()
    block = os.urandom(MIB)
    with path.open("wb") as f:
        for start in range(0, size, MIB):
            part = block[: min(MIB, size - start)]
            f.write(part)
            h.update(part)
    return h.digest()


def file_digest(path: Path) -> bytes:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(MIB):
            h.update(chunk)
    return h.digest()


async def round_trip(broker: Running, tmp_path: Path, size: int) -> int:
    """Move one file of `size` bytes from FR-NCB to DE-BKA; the traced peak (bytes)."""
    source = tmp_path / f"in-{size}.bin"
    want = write_file(source, size)
    async with agencies(broker, "FR-NCB", "DE-BKA") as nodes:
        de = nodes["DE-BKA"]
        tracemalloc.start()
        try:
            published, _ = await Evidence(nodes["FR-NCB"].node).publish(
                source,
                section="photos",
                sections=SECTIONS,
                kind="interpol.red",
                purpose="locate_arrest",
                recipients=["DE-BKA"],
            )
            await until(lambda: any(n.notice_id == published.notice_id for n in de.notices))
            notice = next(n for n in de.notices if n.notice_id == published.notice_id)
            out = tmp_path / f"out-{size}.bin"
            await Evidence(de.node).fetch(notice, "photos", out)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert file_digest(out) == want
    for path in (source, out):
        path.unlink()
    return peak


async def test_memory_is_constant_in_the_file_size(broker: Running, tmp_path: Path) -> None:
    small = await round_trip(broker, tmp_path, 8 * MIB)
    large = await round_trip(broker, tmp_path, 48 * MIB + 12345)
    print(f"traced peak: {small / MIB:.1f} MiB moving 8 MiB, {large / MIB:.1f} MiB moving 48 MiB")
    # A few 1 MiB chunks in flight at each party, whatever the size: not the 48 MiB file.
    assert large < 16 * MIB, f"peak {large / MIB:.1f} MiB moving 48 MiB"
    assert large < small + 4 * MIB, f"peak {small / MIB:.1f} MiB at 8 MiB, {large / MIB:.1f} at 48"


@pytest.mark.slow
@pytest.mark.skipif(not GIB, reason="set BROKER_TEST_ATTACHMENT_GIB=1 for a 1 GiB round trip")
async def test_a_gibibyte_round_trip(broker: Running, tmp_path: Path) -> None:
    peak = await round_trip(broker, tmp_path, int(float(GIB) * 1024 * MIB))
    print(f"traced peak: {peak / MIB:.1f} MiB moving {GIB} GiB")
    assert peak < 16 * MIB, f"peak {peak / MIB:.1f} MiB"
