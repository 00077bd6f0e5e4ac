"""The documentation's code runs: the method example of docs/adding-a-method.md, end to end."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from tests.conftest import REPO

RUNNER = """
import json, math, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
namespace = {}
exec(compile(Path(sys.argv[1]).read_text(), "wrn_width.py", "exec"), namespace)
from nb360.methods import RunContext, get_method
from nb360.runs import write_arch
from nb360.tasks import get_task

method = get_method("wrn_width")
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
    (tmp_path / "wrn_width.py").write_text(blocks[0])
    manifest = embedded.build("satellite")[1]
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, str(tmp_path / "wrn_width.py"), str(manifest), str(tmp_path / "run")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["arch"]["width"] in (0.5, 1.0) and out["trials"] == 2
    assert out["params"] > 0 and all(v == v for v in out["metrics"].values())
