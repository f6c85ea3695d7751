"""The API and the CLI's help must never pull in torch: they start in well under a second."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from nightowl import LAYERS


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
# What the code in each folder must never import (by top-level name). The folders api/, tasks/
# and workers/ install as nightowl_api, nightowl_tasks and nightowl_workers, the names they are
# imported by.
FORBIDDEN = {
    "nightowl": {"nightowl_api", "nightowl_tasks", "nightowl_workers", "torch", "transformers"},
    "api": {"nightowl_tasks", "nightowl_workers", "torch", "transformers"},
    "workers": {"nightowl_api", "nightowl_tasks", "celery", "sqlalchemy", "fastapi"},
}
# The worker's runtime stays a set of plain functions over the core's torch-, SQL- and
# Celery-free bottom layer; tasks/ is where it meets SQL and Celery.
WORKER_SIDE = set(LAYERS[0])


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) for every import in a file, those inside functions included."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            # `from nightowl import jobs` imports the package nightowl.jobs.
            if node.module == "nightowl":
                yield from ((node.lineno, f"nightowl.{a.name}") for a in node.names)


def _package(module: str) -> str | None:
    """The core package a module name belongs to (`nightowl.jobs.chunks` -> `jobs`)."""
    parts = module.split(".")
    return parts[1] if parts[0] == "nightowl" and len(parts) > 1 else None


def _broken(folder: str, allowed: set[str] | None, root: Path = ROOT) -> list[str]:
    out = []
    for path in sorted((root / folder).rglob("*.py")):
        for line, module in _imports(path):
            core = _package(module)
            if module.split(".")[0] in FORBIDDEN.get(folder, set()) or (
                allowed is not None and core is not None and core not in allowed
            ):
                out.append(f"{path.relative_to(root)}:{line} imports {module}")
    return out


def test_the_layer_list_names_every_core_package_once() -> None:
    named = [p for layer in LAYERS for p in layer]
    on_disk = {p.parent.name for p in (ROOT / "nightowl").glob("*/__init__.py")}
    assert len(named) == len(set(named))
    assert set(named) == on_disk
    # Beside the packages the core keeps only its package marker and `python -m nightowl`.
    assert sorted(p.name for p in (ROOT / "nightowl").glob("*.py")) == ["__init__.py",
                                                                         "__main__.py"]


def _layer_breaks(root: Path = ROOT) -> list[str]:
    broken = []
    for depth, layer in enumerate(LAYERS):
        below = {p for lower in LAYERS[:depth] for p in lower}
        for package in layer:
            broken += _broken(f"nightowl/{package}", below | {package}, root)
    return broken


def test_each_core_package_imports_only_the_layers_below_it() -> None:
    assert _layer_breaks() == []


def test_an_import_that_climbs_or_crosses_a_layer_is_caught(tmp_path: Path) -> None:
    for package, source in {"jobs": "from nightowl.openai import batches\n",
                            "openai": "def f() -> None:\n    from nightowl import query\n",
                            "query": "from nightowl.jobs.chunks import claim\n"}.items():
        (tmp_path / "nightowl" / package).mkdir(parents=True)
        (tmp_path / "nightowl" / package / "m.py").write_text(source)
    assert _layer_breaks(tmp_path) == ["nightowl/jobs/m.py:1 imports nightowl.openai",
                                       "nightowl/openai/m.py:2 imports nightowl.query"]


def test_the_core_and_its_cli_import_nothing_of_api_tasks_or_workers() -> None:
    assert _broken("nightowl", None) == []


def test_the_api_reaches_workers_only_by_task_name() -> None:
    assert _broken("api", None) == []


def test_workers_import_only_the_torch_free_sql_free_bottom_layer_of_the_core() -> None:
    assert _broken("workers", WORKER_SIDE) == []
