"""nb360.lazy: modules imported on first use."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nb360.lazy import lazy_import


def test_module_is_imported_at_first_attribute_read_only():
    code = (
        "import sys; from nb360.lazy import lazy_import; m = lazy_import('sklearn.metrics');"
        "assert 'sklearn' not in sys.modules, 'imported too early';"
        "assert m.roc_auc_score([0, 1], [0.1, 0.9]) == 1.0; assert 'sklearn.metrics' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_missing_module_fails_at_first_use():
    m = lazy_import("nb360_no_such_module")
    with pytest.raises(ModuleNotFoundError, match="nb360_no_such_module"):
        m.anything  # noqa: B018


def test_training_job_imports_leave_the_heavy_modules_out():
    code = (
        "import sys, nb360.methods, nb360.tasks, nb360.metrics, nb360.runs, nb360.methods.darts,"
        " nb360.methods.densenas, nb360.methods.wrn_asha\n"
        "heavy = ['sklearn', 'pandas', 'soundfile', 'scipy.signal', 'scipy.stats', 'scipy.ndimage',"
        " 'scipy.sparse', 'PIL.Image']\n"
        "heavy = [m for m in heavy if m in sys.modules]\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
