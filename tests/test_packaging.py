"""Installing nightowl adds no generic top-level package (`api`, `tasks`, `workers`,
`migrations`) to the user's environment: those folders install under nightowl_* names."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GENERIC = ("api", "tasks", "workers", "migrations")


def _setuptools() -> dict[str, object]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    tool: dict[str, object] = config["tool"]["setuptools"]
    return tool


def _folder(package: str, package_dir: dict[str, str]) -> Path:
    """The folder setuptools builds `package` from (the longest mapped prefix wins)."""
    parts = package.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in package_dir:
            return ROOT / package_dir[prefix] / Path(*parts[n:])
    return ROOT / Path(*parts)


def test_the_built_packages_have_only_nightowl_prefixed_top_level_names() -> None:
    packages = _setuptools()["packages"]
    assert isinstance(packages, list)
    tops = {p.split(".")[0] for p in packages}
    assert tops == {"nightowl", "nightowl_api", "nightowl_tasks", "nightowl_workers",
                    "nightowl_migrations"}


def test_every_package_folder_is_built_and_every_listed_package_has_its_folder() -> None:
    tool = _setuptools()
    packages, package_dir = tool["packages"], tool["package-dir"]
    assert isinstance(packages, list) and isinstance(package_dir, dict)
    folders = {_folder(p, package_dir) for p in packages}
    assert all((f / "__init__.py").is_file() for f in folders), sorted(map(str, folders))
    on_disk = {init.parent for top in ("nightowl", *GENERIC)
               for init in (ROOT / top).rglob("__init__.py")}
    missing = sorted(str(f.relative_to(ROOT)) for f in on_disk - folders)
    assert missing == [], f"package folders not listed in pyproject.toml: {missing}"


def test_the_installed_distribution_exposes_no_generic_top_level_package(tmp_path: Path) -> None:
    # From an empty folder and without PYTHONPATH, so that only what is installed is found.
    code = (
        "import importlib.util as u\n"
        f"print([n for n in {GENERIC!r} if u.find_spec(n) is not None])\n"
        "import nightowl_api, nightowl_tasks, nightowl_workers, nightowl_migrations\n"
        "from importlib.resources import files\n"
        "assert (files('nightowl_api') / 'templates' / 'jobs.html').is_file()\n"
        "assert (files('nightowl_api') / 'static' / 'dashboard.js').is_file()\n"
        "assert (files('nightowl_workers') / 'data' / 'toy_corpora.json').is_file()\n"
        "assert (files('nightowl_migrations') / 'script.py.mako').is_file()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
