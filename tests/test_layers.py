"""The dependency rule of the packages, checked over the source so the picture cannot drift from the code.

Order, lowest first: leaves (errors, version, cores, console) < lake < engine, ingestion < export, report < the
package's public face (``pipeline/__init__``, ``__main__``) < cli.py. An import may only point down (or stay in
its own package); engine never imports ingestion; nothing imports cli but the entry point (``__main__``). Imports
under ``if TYPE_CHECKING:`` are annotations only and are not counted.

One exception, by design: ``Lake`` is the user's one object, so its methods ``to_npz``, ``to_d3rlpy``, ``report``,
``to_minari``, ``sampler`` hand the work to ``export``/``report`` with an import inside the method. Such a deferred
import is allowed from ``engine/lake.py`` to ``export`` and ``report`` only: it creates no import cycle and loads
nothing until the method is called.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "pipeline"

LEAVES = {"errors", "version", "cores", "console"}
# What each part may import besides itself and the leaves.
ALLOWED: dict[str, set[str]] = {
    "lake": set(),
    "ingestion": {"lake"},
    "engine": {"lake"},
    "export": {"engine", "lake"},
    "report": {"engine", "lake", "export"},
}
# Deferred (function-level) imports allowed on top of ALLOWED: module -> parts.
FACADE = {"pipeline.engine.lake": {"export", "report"}}
# Modules that a reader of the lake must never load (the ingest stack).
INGEST_STACK = ("ijson", "fsspec", "jsonschema_rs", "zstandard", "pipeline.ingestion")


def _part(module: str) -> str:
    """``pipeline.lake.commit`` -> ``lake``; ``pipeline.errors`` -> ``errors``; ``pipeline`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path, root: Path = REPO) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _runtime_imports(path: Path, root: Path = REPO) -> list[tuple[int, str, bool]]:
    """(line, absolute module, deferred) of every import that runs, skipping ``if TYPE_CHECKING:`` blocks.

    ``deferred`` is true for an import inside a function (it runs only when the function is called).
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    module = _module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[int, str, bool]] = []

    def visit(node: ast.AST, deferred: bool = False) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child, deferred)
            return
        deferred = deferred or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name, deferred) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if node.module is None or (node.level and not node.module):
                found.extend((node.lineno, f"{target}.{alias.name}", deferred) for alias in node.names)
            else:
                found.append((node.lineno, target, deferred))
        for child in ast.iter_child_nodes(node):
            visit(child, deferred)

    visit(tree)
    return found


def layer_violations(root: Path = REPO) -> list[str]:
    """Every import in ``pipeline/`` that breaks the dependency rule, as 'file:line: a imports b (why)'."""
    problems = []
    for path in sorted((root / "pipeline").rglob("*.py")):
        source = _module_name(path, root)
        mine = _part(source)
        for line, target, deferred in _runtime_imports(path, root):
            where = f"{path.relative_to(root)}:{line}: {source} imports {target}"
            if source == "pipeline.__main__" and target == "pipeline.cli":
                continue  # the entry point runs the commands
            if target == "cli" or target.startswith("pipeline.cli"):
                problems.append(f"{where} (nothing imports cli)")
                continue
            if target != "pipeline" and not target.startswith("pipeline."):
                continue
            theirs = _part(target)
            if mine in ("__init__", "__main__") or theirs == mine or theirs in LEAVES:
                if theirs == "__init__" and mine != "__init__":
                    problems.append(f"{where} (the package's public face is above every part)")
                continue
            if theirs == "__init__":
                problems.append(f"{where} (the package's public face is above every part)")
            elif mine in LEAVES:
                problems.append(f"{where} ({mine} is a leaf: it imports no other part)")
            elif deferred and theirs in FACADE.get(source, set()):
                continue
            elif theirs not in ALLOWED.get(mine, set()):
                problems.append(f"{where} ({mine} may import only {sorted(ALLOWED.get(mine, set())) or 'the leaves'})")
    return problems


def test_no_import_runs_up_the_layers() -> None:
    assert layer_violations() == []


def test_the_check_catches_an_upward_import(tmp_path: Path) -> None:
    """The rule bites: a copy of the package with one upward import added on purpose fails it."""
    import shutil

    shutil.copytree(PACKAGE, tmp_path / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    writer = tmp_path / "pipeline" / "lake" / "writer.py"
    writer.write_text(writer.read_text(encoding="utf-8") + "\nfrom ..engine.lake import Lake  # noqa\n",
                      encoding="utf-8")
    agentrows = tmp_path / "pipeline" / "engine" / "agentrows.py"
    agentrows.write_text(agentrows.read_text(encoding="utf-8") + "\nimport pipeline.ingestion.run  # noqa\n",
                         encoding="utf-8")
    found = layer_violations(tmp_path)
    assert len(found) == 2, found
    assert "lake may import only the leaves" in found[0] or "lake may import only the leaves" in found[1]
    assert any("engine may import only ['lake']" in f for f in found)


def _fresh(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print('\\n'.join(sys.modules))"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    return set(out.split())


@pytest.fixture(scope="module")
def small_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipeline import ingest
    from tests.helpers import episode, write_json

    root = tmp_path_factory.mktemp("layers")
    lake = root / "lake"
    assert ingest(write_json(root / "e.json", episode(steps=4)), lake=lake).status == "ingested"
    return lake


def test_reading_a_lake_never_loads_the_ingest_stack_or_pandas(small_lake: Path) -> None:
    loaded = _fresh(
        f"import pipeline\nlake = pipeline.Lake({str(small_lake)!r})\n"
        "lake.episodes().collect(); lake.agent_steps().collect()\n"
        "lake.trajectory(lake.episodes().collect()['episode_id'][0])"
    )
    assert "pipeline.engine.lake" in loaded
    stack = sorted(m for m in loaded if m.startswith(INGEST_STACK))
    assert stack == [], f"a reader loaded the ingest stack: {stack}"
    assert "pandas" not in loaded, "a first lake query imported pandas (0.25 s)"


def test_importing_the_package_loads_nothing_heavy() -> None:
    loaded = _fresh("import pipeline")
    heavy = sorted(m for m in loaded if m.split(".")[0] in {"polars", "pyarrow", "numpy", "ijson", "fsspec", "PIL"})
    assert heavy == []
