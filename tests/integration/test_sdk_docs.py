"""docs/sdk.md's examples, run as written against a real broker: each ```python block
that starts with ``# example: NAME`` is loaded as a module and its ``main`` called."""

from __future__ import annotations

import asyncio
import re
import types
from pathlib import Path
from typing import Any

import pytest

from .conftest import Running

pytestmark = pytest.mark.integration

DOC = Path(__file__).resolve().parents[2] / "docs" / "sdk.md"
BLOCK = re.compile(r"```python\n(# example: (\S+)\n.*?)```", re.S)


def examples() -> dict[str, types.ModuleType]:
    found = {}
    for source, name in BLOCK.findall(DOC.read_text()):
        module = types.ModuleType(name.removesuffix(".py"))
        exec(compile(source, f"docs/sdk.md:{name}", "exec"), module.__dict__)
        found[name] = module
    return found


def test_the_guide_has_the_four_examples() -> None:
    assert set(examples()) == {"publish.py", "listen.py", "lifecycle.py", "audit.py"}
    for module in examples().values():
        assert asyncio.iscoroutinefunction(module.main)


async def test_the_examples_run_against_a_real_broker(
    broker: Running, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ex = examples()
    target, keys = broker.target, broker.deployment.keys_dir
    state = broker.deployment.root / "nodes"

    async def run(name: str, *args: Any) -> Any:
        return await asyncio.wait_for(ex[name].main(target, keys, state, *args), 60)

    notice_id = await run("publish.py")
    out = capsys.readouterr().out
    assert f"published {notice_id} v1" in out
    assert "DE-BKA reads identity" in out

    assert await run("listen.py") == [notice_id]
    out = capsys.readouterr().out
    assert "interpol.yellow" in out and "about a victim" in out and "Märta" in out

    states = await run("lifecycle.py", notice_id)
    out = capsys.readouterr().out
    assert "as expected:" in out
    assert "DE-BKA" in states

    auditor_state = tmp_path / "auditor"
    auditor_state.mkdir()
    receipted = await asyncio.wait_for(
        ex["audit.py"].main(target, keys, auditor_state, notice_id), 60
    )
    out = capsys.readouterr().out
    assert "log: first" in out
    assert "DE-BKA" in receipted
