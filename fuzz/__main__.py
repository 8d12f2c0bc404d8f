"""``python -m fuzz TARGET [-runs=N] [-max_total_time=S] [corpus_dir ...]``.

Flags starting with ``-`` go to libFuzzer as they are. With no corpus directory given,
the target's kept seed corpus (fuzz/corpus/TARGET) is read, and what libFuzzer finds
goes to a temporary directory: the kept corpus only changes by hand (or ``-merge=1``).
"""

from __future__ import annotations

import importlib
import sys
import tempfile
from pathlib import Path

import atheris

from fuzz import TARGETS

CORPUS = Path(__file__).parent / "corpus"


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] not in TARGETS:
        print(f"usage: python -m fuzz {{{','.join(TARGETS)}}} [libFuzzer flags] [corpus dirs]",
              file=sys.stderr)
        return 2
    target = argv[1]
    rest = argv[2:]
    if not any(not arg.startswith("-") for arg in rest):
        # libFuzzer writes new inputs into the first directory: a scratch one.
        scratch = tempfile.mkdtemp(prefix=f"fuzz-{target}-")
        rest = [*rest, scratch, str(CORPUS / target)]
    # Our Python modules are instrumented for coverage when the target imports them.
    with atheris.instrument_imports(include=["mcu", "signaling", "scheduler", "admin_web", "fuzz"]):
        module = importlib.import_module(f"fuzz.{target}")
    atheris.Setup([argv[0], *rest], module.one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
