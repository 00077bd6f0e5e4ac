"""Format and lint gates: ruff for Python, snakefmt and `snakemake --lint` for the rules."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

BIN = Path(sys.executable).parent


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "cmd",
    [
        ("ruff", "check", "."),
        ("ruff", "format", "--check", "."),
        ("snakefmt", "--check", "Snakefile", "workflow/rules"),
        ("snakemake", "--lint"),
    ],
    ids=["ruff-check", "ruff-format", "snakefmt", "snakemake-lint"],
)
def test_clean(cmd):
    exe = BIN / cmd[0] if (BIN / cmd[0]).exists() else shutil.which(cmd[0])
    assert exe, f"{cmd[0]} is not installed (make setup installs it)"
    proc = _run(str(exe), *cmd[1:])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
