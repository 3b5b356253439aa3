"""One coverage-guided atheris run of one fuzz target: `python -m tests.fuzz.atheris_main
TARGET [libFuzzer flags] [CORPUS_DIR]`. Started by tests/fuzz/run.py (`make fuzz`), which
bounds it in time; the broker package is instrumented for coverage."""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["broker"]):
    from tests.fuzz import targets


def main() -> None:
    name = sys.argv[1]
    if name not in targets.TARGETS:
        raise SystemExit(f"unknown fuzz target {name!r}: use one of {', '.join(targets.TARGETS)}")

    def one_input(data: bytes) -> None:
        targets.run(name, data)

    atheris.Setup([sys.argv[0], *sys.argv[2:]], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
