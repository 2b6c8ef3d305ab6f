"""``python -m pipeline`` and the ``ingest-pipeline`` command's entry point.

The commands live in ``cli.py`` at the repository's top level. A built wheel carries that file as
``pipeline/cli.py`` (nothing generic such as ``cli`` lands in site-packages); a source checkout or
an editable install (``pip install -e .``) has it beside the package, where it is loaded by path.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def _cli() -> ModuleType:
    try:
        from . import cli  # present only inside a built wheel
    except ImportError:
        path = Path(__file__).resolve().parent.parent / "cli.py"
        spec = importlib.util.spec_from_file_location("pipeline.cli", path)
        if spec is None or spec.loader is None or not path.is_file():
            raise SystemExit(f"ingest-pipeline: the command's module is missing (looked for {path})") from None
        cli = importlib.util.module_from_spec(spec)
        sys.modules["pipeline.cli"] = cli
        spec.loader.exec_module(cli)
    return cli


def main() -> None:
    """Run the ``ingest-pipeline`` command."""
    _cli().main()


if __name__ == "__main__":
    main()
