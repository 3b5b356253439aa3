"""The sealed notice broker."""

from __future__ import annotations

import atexit
import contextlib
import os
import sys


def _remove_rbcl_library() -> None:
    # rbcl (ristretto255 for lookups) writes its bundled libsodium to a new temporary file
    # each time a process imports it, and never removes it (2.7 MB a process): remove it
    # when a process that loaded it exits. The library stays mapped until then.
    path = getattr(sys.modules.get("rbcl._sodium"), "lib_path", None)
    if isinstance(path, str):
        with contextlib.suppress(OSError):
            os.unlink(path)


atexit.register(_remove_rbcl_library)
