"""A retrain that is exactly another method's (WRN-ASHA keeping the WRN's configuration) reuses that run's
result instead of training again, and is charged its cost."""

import json

import pytest

from nb360.methods import RunContext, get_method, method_info, wrn_asha
from nb360.methods.wrn import budget_for, train_config
from nb360.report.cost import job_costs
from nb360.runs import ARCH_FORMAT, reuse_run, write_run
from nb360.tasks import get_task
from nb360.train import RunResult
from tests.test_report_cost import bench


def _wrn_run(tmp_path):
    d = tmp_path / "runs/satellite/wrn/seed0"
    result = RunResult(
        {"error_pct": 12.5}, [{"epoch": 1, "train_loss": 1.0}], 1234, "retrain", ("test",), "cpu", 9.0
    )
    meta = {"task": "satellite", "method": "wrn", "seed": 0, "budget": "smoke", "data_source": "embedded"}
    write_run(result, d / "scores.json", d / "history.json", meta)
    bench(d / "benchmark.tsv", 600.0, 590.0)
    return d / "scores.json"


def _arch(tmp_path, hparams):
    path = tmp_path / "arch.json"
    body = {
        "format": ARCH_FORMAT,
        "task": "satellite",
        "method": "wrn_asha",
        "seed": 0,
        "kind": wrn_asha.KIND,
    }
    path.write_text(json.dumps({**body, "arch": hparams, "summary": "", "search": {"device": "cpu"}}))
    return path


def test_wrn_asha_reuses_the_wrn_run_when_the_search_kept_its_configuration(tmp_path):
    assert method_info("wrn_asha").reuses == ("wrn",)
    spec = get_task("satellite")
    cfg = train_config("satellite", budget_for("satellite", "smoke"))
    hparams = {"lr": cfg.lr, "momentum": cfg.momentum, "weight_decay": cfg.weight_decay, "dropout": None}
    scores = _wrn_run(tmp_path)
    ctx = RunContext(spec, tmp_path / "no-manifest.json", 0, "smoke", "cpu", tmp_path / "asha",
                     arch=_arch(tmp_path, hparams), inputs={"wrn": scores})  # fmt: skip
    result = get_method("wrn_asha").retrain(ctx)  # no manifest: it would fail if it trained
    assert result.metrics == {"error_pct": 12.5} and result.params == 1234
    assert result.history == [{"epoch": 1, "train_loss": 1.0}] and result.reused_from == str(scores)


def test_another_configuration_is_not_the_wrns_training():
    budget = budget_for("satellite", "smoke")
    cfg = train_config("satellite", budget)
    same = {"lr": cfg.lr, "momentum": cfg.momentum, "weight_decay": cfg.weight_decay}
    assert wrn_asha.is_wrn_training(
        "satellite", budget, same, wrn_asha.tuned_config("satellite", budget, same)
    )
    for change in ({"lr": cfg.lr / 2}, {"momentum": 0.3}, {"weight_decay": 1e-3}, {"dropout": 0.3}):
        hp = {**same, **change}
        assert not wrn_asha.is_wrn_training(
            "satellite", budget, hp, wrn_asha.tuned_config("satellite", budget, hp)
        )


def test_a_reused_run_records_its_source_and_is_charged_its_cost(tmp_path):
    source = _wrn_run(tmp_path)
    d = tmp_path / "runs/satellite/wrn_asha/seed0"
    meta = {
        "task": "satellite",
        "method": "wrn_asha",
        "seed": 0,
        "budget": "smoke",
        "data_source": "embedded",
    }
    write_run(reuse_run(source), d / "scores.json", d / "history.json", meta)
    bench(d / "benchmark.tsv", 2.0, 1.5)  # the reusing job itself took seconds
    assert json.loads((d / "scores.json").read_text())["reused_from"] == str(source)
    jobs = job_costs([source, d / "scores.json"]).set_index("method")
    assert jobs.loc["wrn_asha", "wall_h"] == jobs.loc["wrn", "wall_h"] == pytest.approx(600 / 3600)


def test_a_damaged_source_run_is_an_error_naming_it(tmp_path):
    source = _wrn_run(tmp_path)
    source.with_name("history.json").write_text("{")
    with pytest.raises(RuntimeError, match=r"history\.json"):
        reuse_run(source)
