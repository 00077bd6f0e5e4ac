"""The documentation's code runs: the method example of docs/adding-a-method.md (its module and its registry
entry), end to end."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from tests.conftest import REPO

# The module goes into a folder on nb360.methods' search path and its entry into the registry, as if both were
# added to the repository; get_method then imports the module, as for any method.
RUNNER = """
import json, math, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
import nb360.methods
from nb360.methods import RunContext, get_method, registry
from nb360.methods.registry import MethodInfo
from nb360.runs import write_arch
from nb360.tasks import get_task

nb360.methods.__path__.append(str(Path(sys.argv[1]).parent))
registry.METHODS = (*registry.METHODS, *eval(Path(sys.argv[4]).read_text(), {"MethodInfo": MethodInfo}))
method = get_method("wrn_width")
assert "nb360.methods.wrn_width" in sys.modules and method.title == "WRN width"
work = Path(sys.argv[3])
ctx = RunContext(get_task("satellite"), Path(sys.argv[2]), 0, "smoke", "cpu", work)
found = method.search(ctx)
write_arch(found.kind, found.arch, found.summary, work / "arch.json", {"task": "satellite"})
result = method.retrain(RunContext(ctx.task, ctx.manifest, 0, "smoke", "cpu", work, arch=work / "arch.json"))
print(json.dumps({"arch": found.arch, "trials": len(found.history), "metrics": result.metrics,
                  "params": result.params}))
"""


def test_adding_a_method_example_searches_and_retrains(embedded, tmp_path):
    text = (REPO / "docs" / "adding-a-method.md").read_text()
    blocks = re.findall(r"```python\n(# nb360/methods/wrn_width.py\n.*?)```", text, flags=re.S)
    assert len(blocks) == 1, "the example module is not in the docs any more"
    entries = re.findall(r"```python\n# nb360/methods/registry.py, in METHODS\n(.*?)```", text, flags=re.S)
    assert len(entries) == 1, "the example's registry entry is not in the docs any more"
    (tmp_path / "wrn_width.py").write_text(blocks[0])
    (tmp_path / "entry.py").write_text(f"({entries[0].strip()})")  # one MethodInfo and its comma: a tuple
    manifest = embedded.build("satellite")[1]
    args = [str(tmp_path / "wrn_width.py"), str(manifest), str(tmp_path / "run"), str(tmp_path / "entry.py")]
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["arch"]["width"] in (0.5, 1.0) and out["trials"] == 2
    assert out["params"] > 0 and all(v == v for v in out["metrics"].values())
