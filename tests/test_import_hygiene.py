"""The API and the CLI's help must never pull in torch: they start in well under a second."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys; print(' '.join(sys.modules))"],
        capture_output=True, text=True, check=True,
    ).stdout
    return set(out.split())


def test_importing_the_api_leaves_torch_out() -> None:
    mods = _modules_after("import nightowl_api.main")
    assert "torch" not in mods
    assert "transformers" not in mods


def test_cli_help_leaves_torch_out() -> None:
    code = (
        "from click.testing import CliRunner\n"
        "from nightowl.cli import cli\n"
        "for args in (['--help'], ['submit', '--help'], ['models', '--help'],\n"
        "             ['jobs', '--help']):\n"
        "    r = CliRunner().invoke(cli, args)\n"
        "    assert r.exit_code == 0, r.output\n"
    )
    mods = _modules_after(code)
    assert "torch" not in mods
    assert "transformers" not in mods


def test_console_script_answers_help() -> None:
    proc = subprocess.run([sys.executable, "-m", "nightowl", "--help"], capture_output=True,
                          text=True, check=True)
    for command in ("submit", "jobs", "results", "models", "worker", "up", "db"):
        assert command in proc.stdout


# -- the layer rule, read from the source: which package may import which ---------------------

ROOT = Path(__file__).resolve().parent.parent
# The core modules a worker may import: torch-free, SQL-free and Celery-free leaves. The
# worker's runtime stays a set of plain functions; tasks/ is where it meets SQL and Celery.
WORKER_SIDE = {"nightowl.config", "nightowl.enums", "nightowl.errors",
               "nightowl.specs", "nightowl.values", "nightowl.tokens", "nightowl.sources",
               "nightowl.items"}
# What the code in each folder must never import (by top-level name, or a core module outside
# the leaves). The folders api/, tasks/ and workers/ install as nightowl_api, nightowl_tasks and
# nightowl_workers, which is the name they are imported by.
FORBIDDEN = {
    "nightowl": {"nightowl_api", "nightowl_tasks", "nightowl_workers"},
    "api": {"nightowl_tasks", "nightowl_workers", "torch", "transformers"},
    "workers": {"nightowl_api", "nightowl_tasks", "celery", "sqlalchemy", "fastapi"},
}


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) for every import in a file, those inside functions included."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            # `from nightowl import chunks` imports the module nightowl.chunks.
            if node.module == "nightowl":
                yield from ((node.lineno, f"nightowl.{a.name}") for a in node.names)


def _broken(package: str, allowed_core: set[str] | None) -> list[str]:
    out = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, module in _imports(path):
            top = module.split(".")[0]
            outside = (allowed_core is not None and top == "nightowl" and module != "nightowl"
                       and ".".join(module.split(".")[:2]) not in allowed_core)
            if top in FORBIDDEN.get(package, set()) or outside:
                out.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return out


def test_the_core_and_its_cli_import_nothing_of_api_tasks_or_workers() -> None:
    assert _broken("nightowl", None) == []


def test_the_api_reaches_workers_only_by_task_name() -> None:
    assert _broken("api", None) == []


def test_workers_import_only_the_torch_free_sql_free_leaves_of_the_core() -> None:
    assert _broken("workers", WORKER_SIDE) == []
    # ... and those leaves keep to themselves, so neither the ORM, the job service nor Celery
    # reaches a worker through them (config parses database URLs with sqlalchemy, no more).
    leaves = []
    for module in sorted(WORKER_SIDE):
        path = ROOT / (module.replace(".", "/") + ".py")
        if not path.is_file():
            continue
        for line, imported in _imports(path):
            top = imported.split(".")[0]
            core = ".".join(imported.split(".")[:2])
            if top in {"celery", "torch", "nightowl_api", "nightowl_tasks", "nightowl_workers"} or (
                top == "nightowl" and imported != "nightowl" and core not in WORKER_SIDE
            ):
                leaves.append(f"{path.relative_to(ROOT)}:{line} imports {imported}")
    assert leaves == []
