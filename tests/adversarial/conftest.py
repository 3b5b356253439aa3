"""The broker is the attacker here: a real broker over mutual TLS whose code is subclassed
or patched, or whose database rows are edited under it. The real SDK and audit tools
observe; each test names the component that catches the attack."""

from __future__ import annotations

from tests.integration.conftest import (  # noqa: F401 (the fixtures, shared)
    broker,
    deployment,
    deployment_template,
    start_broker,
)
