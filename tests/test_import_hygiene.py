"""The API and the CLI's help must never pull in torch: they start in well under a second."""

from __future__ import annotations

import subprocess
import sys


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys; print(' '.join(sys.modules))"],
        capture_output=True, text=True, check=True,
    ).stdout
    return set(out.split())


def test_importing_the_api_leaves_torch_out() -> None:
    mods = _modules_after("import api.main")
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
