"""rbcl writes its libsodium to a temporary file at import; a broker process removes it at exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_the_temporary_library_is_removed_at_exit() -> None:
    code = (
        "import sys; from broker.core import oprf; oprf.public_key(oprf.scalar_of(3)); "
        "print(sys.modules['rbcl._sodium'].lib_path)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    path = Path(out.stdout.strip())
    assert path.name.endswith(".so")
    assert not path.exists()
