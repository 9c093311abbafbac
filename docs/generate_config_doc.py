"""Regenerate ``docs/config.md`` from the config schema.

Run after changing the schema or a description in ``ecoclassify/configdoc.py``::

    python3 docs/generate_config_doc.py          # write docs/config.md
    python3 docs/generate_config_doc.py --check  # exit 1 if docs/config.md is stale (what CI tests)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ecoclassify.config.reference import missing_descriptions, render_config_reference
from ecoclassify.files import write_text

DOC = Path(__file__).resolve().parent / "config.md"


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check`` compare) the reference; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report whether the file is up to date")
    args = parser.parse_args(argv)
    missing = missing_descriptions()
    if missing:
        print(f"keys without a description in ecoclassify/configdoc.py DESCRIPTIONS: {', '.join(missing)}",
              file=sys.stderr)
        return 1
    text = render_config_reference()
    current = DOC.read_text(encoding="utf-8") if DOC.is_file() else None
    if args.check:
        if current != text:
            print(f"{DOC} is stale: run python3 docs/generate_config_doc.py", file=sys.stderr)
            return 1
        return 0
    if current != text:
        write_text(DOC, text)
        DOC.chmod(0o644)  # atomic_write's temporary file is private
    print(f"{DOC} {'updated' if current != text else 'already up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
