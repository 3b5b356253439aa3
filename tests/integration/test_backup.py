"""`broker backup` of a live deployment and `broker restore` into a new directory: a
broker started on the restored store serves the same transparency log, which an auditor's
monitor verifies against the state it saved before the backup."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path

import pytest

from broker.cli.main import main
from broker.client import audit as ac
from broker.sandbox import Deployment
from broker.server.app import BrokerApp

from .conftest import Running, StartBroker
from .test_audit import auditor, publish, trust

pytestmark = pytest.mark.integration


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


async def test_backup_live_restore_elsewhere_and_verify_the_log(
    deployment: Deployment,
    start_broker: StartBroker,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    live: Running = await start_broker()
    await publish(live)
    await publish(live)
    state = tmp_path / "auditor.json"
    async with auditor(live) as client:
        seen = await ac.monitor(client, trust(live), state, check_entries=True)
    assert seen.ok, seen.message

    out = tmp_path / "backup-1"
    code, text, err = cli(
        capsys, "backup", str(out), "--data-dir", str(live.app.config.data_dir), "--json"
    )
    assert code == 0, err
    manifest = json.loads(text)
    assert manifest["log_size"] >= seen.size and manifest["checkpoint"]["size"] >= seen.size
    assert sorted(p.name for p in out.iterdir()) == ["backup.json", "broker.sqlite3"]
    await publish(live)  # the live broker goes on; the backup keeps what it had

    restored_dir = tmp_path / "restored"
    code, text, err = cli(capsys, "restore", str(out), "--data-dir", str(restored_dir))
    assert code == 0, err
    assert f"restored {out} into {restored_dir}" in text
    conn = sqlite3.connect(restored_dir / "broker.sqlite3")
    try:
        (leaves,) = conn.execute("SELECT COUNT(*) FROM tlog_leaves").fetchone()
    finally:
        conn.close()
    assert leaves == manifest["log_size"]

    # A broker on the restored store (same keys) serves the log the auditor saw, extended.
    await live.app.stop(grace=0.5)
    config = dataclasses.replace(live.app.config, data_dir=restored_dir, listen="127.0.0.1:0")
    app = BrokerApp(config)
    port = await app.start()
    try:
        again = Running(app, deployment, f"127.0.0.1:{port}")
        async with auditor(again) as client:
            verified = await ac.monitor(client, trust(again), state, check_entries=True, full=True)
        assert verified.ok, verified.message
        assert verified.verdict in ("same", "extends")
        assert verified.size >= manifest["checkpoint"]["size"]
        assert verified.entries_checked == verified.size
    finally:
        await app.stop(grace=0.5)


async def test_restore_refuses_a_used_directory_and_an_altered_backup(
    broker: Running, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await publish(broker)
    out = tmp_path / "b"
    data_dir = str(broker.app.config.data_dir)
    assert cli(capsys, "backup", str(out), "--data-dir", data_dir)[0] == 0
    # A second backup into the same directory is refused.
    code, _, err = cli(capsys, "backup", str(out), "--data-dir", data_dir)
    assert code == 2 and "exists and is not empty" in err
    # Restoring over the live store is refused and changes nothing.
    before = (broker.app.config.data_dir / "broker.sqlite3").stat().st_mtime_ns
    code, _, err = cli(capsys, "restore", str(out), "--data-dir", data_dir)
    assert code == 2 and "already holds a store" in err
    assert (broker.app.config.data_dir / "broker.sqlite3").stat().st_mtime_ns == before
    # One flipped byte in the copy: refused, nothing written.
    db = out / "broker.sqlite3"
    data = bytearray(db.read_bytes())
    data[len(data) // 2] ^= 0x01
    db.write_bytes(bytes(data))
    target = tmp_path / "new"
    code, _, err = cli(capsys, "restore", str(out), "--data-dir", str(target))
    assert code == 2 and "does not match its manifest" in err
    assert not (target / "broker.sqlite3").exists()
    # Not a backup at all.
    code, _, err = cli(capsys, "restore", str(tmp_path), "--data-dir", str(target))
    assert code == 2 and "is not a broker backup" in err
    # Nothing to back up.
    code, _, err = cli(capsys, "backup", str(tmp_path / "c"), "--data-dir", str(tmp_path / "x"))
    assert code == 2 and "no broker store at" in err


def test_a_log_that_does_not_hash_to_its_checkpoint_is_refused(tmp_path: Path) -> None:
    from broker.errors import FailedPrecondition
    from broker.store import backup
    from broker.store.sqlite import SqliteStore

    path = tmp_path / "broker.sqlite3"
    SqliteStore.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO tlog_leaves VALUES (0, x'00', 'notice', 'n', 1, 'o', '', 0)")
    conn.execute(
        "INSERT INTO tlog_checkpoints (size, root, note, issued_at_ms) VALUES (1, x'00', 'n', 0)"
    )
    conn.commit()
    conn.close()
    with pytest.raises(FailedPrecondition, match="do not hash to its checkpoint of size 1"):
        backup.backup(path, tmp_path / "out")
    assert not (tmp_path / "out" / "broker.sqlite3").exists()
