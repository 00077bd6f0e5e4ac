"""The method registry: one light list of entries (what the workflow reads) and the modules that implement
them (what a job runs), which must agree; and importing the registry costs no torch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nb360.config_origin import CLI, config_error, config_layers, config_origin
from nb360.methods import Method, get_method, list_methods, method_info, register_method, registry
from tests.conftest import REPO

HEAVY = ("torch", "scipy", "optuna", "numpy", "pandas", "h5py", "sklearn", "matplotlib")


def _fresh_modules(code: str) -> list[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", list_methods())
def test_module_and_registry_entry_agree(name):
    method, info = get_method(name), method_info(name)
    assert method.name == name and method.info == info
    assert method.searches == info.searches
    assert (method.search_worker is not None) == info.search_workers
    assert (method.tune is not None) == info.tunes
    assert callable(method.retrain) and info.module in sys.modules
    assert method.title == info.title and method.cpu_only == info.cpu_only and method.reads == info.reads
    for other in info.reads:  # a search it reads is a registered search
        assert method_info(other).searches


def test_every_paper_method_is_registered_in_table_order():
    assert list_methods() == [
        "trivial",
        "wrn",
        "xgboost",
        "perceiver_io",
        "expert",
        "wrn_asha",
        "random_search",
        "densenas",
        "densenas_random",
        "gaea",
        "darts",
        "darts2",
        "amber",
        "autodeeplab",
        "dash",  # after the paper's rows
    ]


def test_registry_resources_and_config_checks_import_nothing_heavy():
    loaded = _fresh_modules(
        "import nb360.methods, nb360.methods.registry, nb360.resources, nb360.config_origin\n"
        "from nb360.methods import method_info, list_methods\n"
        "[method_info(m) for m in list_methods()]"
    )
    assert not [m for m in loaded if m.split(".")[0] in HEAVY]
    implementations = {method_info(m).module for m in list_methods()}
    assert not implementations & set(loaded)


def test_a_job_imports_only_the_module_of_its_method():
    loaded = set(_fresh_modules("from nb360.methods import get_method\nget_method('wrn')"))
    assert "nb360.methods.wrn" in loaded and "torch" in loaded
    others = {method_info(m).module for m in list_methods()} - {"nb360.methods.wrn"}
    assert not others & loaded and "optuna" not in loaded


def test_unknown_method_names_the_registered_ones():
    with pytest.raises(KeyError, match="registered methods: trivial, wrn"):
        get_method("wrn_width")


def test_registering_a_method_without_an_entry_is_refused():
    with pytest.raises(ValueError, match=r"no entry in nb360/methods/registry\.py"):
        register_method(Method("unlisted", lambda ctx: None))


def test_functions_that_contradict_the_entry_are_refused():
    with pytest.raises(ValueError, match="says searches=False"):
        register_method(Method("wrn", lambda ctx: None, search=lambda ctx: None))
    with pytest.raises(ValueError, match="search_workers=True"):
        register_method(Method("wrn_asha", lambda ctx: None, search=lambda ctx: None))
    with pytest.raises(ValueError, match="says searches=True, search_workers=False, tunes=True"):
        register_method(Method("dash", lambda ctx: None, search=lambda ctx: None))
    assert get_method("wrn").search is None  # the registered one is untouched


def test_an_entry_whose_module_registers_nothing_is_an_error(monkeypatch):
    ghost = registry.MethodInfo("ghost", "nb360.methods.trivial", "Ghost")
    monkeypatch.setattr(registry, "METHODS", (*registry.METHODS, ghost))
    with pytest.raises(ValueError, match=r"nb360\.methods\.trivial registers no method of that name"):
        get_method("ghost")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"search_workers": True}, "search workers but no search"),
        ({"reads": ("densenas",)}, "no search of its own"),
        ({"tunes": True}, "tunes the hyper-parameters of a search it does not have"),
        ({"cpu_only": ("train",)}, "cpu_only"),
    ],
)
def test_inconsistent_entries_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        registry.MethodInfo("x", "nb360.methods.x", "X", **fields)


def test_two_entries_of_one_name_are_refused(monkeypatch):
    monkeypatch.setattr(registry, "METHODS", (*registry.METHODS, method_info("wrn")))
    with pytest.raises(ValueError, match="two entries"):
        list_methods()


# Where a config value came from.


def test_config_origin_is_the_last_layer_that_sets_the_key():
    layers = [
        ("config.yaml", {"methods": ["wrn"], "train": {"budget": "smoke", "device": "auto"}}),
        ("paper.yaml", {"train": {"budget": "paper"}}),
        ("methods.yaml", {"methods": ["foo"]}),
    ]
    assert config_origin("methods", layers) == "methods.yaml"
    assert config_origin("train.budget", layers) == "paper.yaml"
    assert config_origin("train.device", layers) == "config.yaml"
    assert config_origin("search.workers", layers) == "config.yaml"  # a default: where it would go
    assert config_origin("methods", [*layers, (CLI, {"methods": ["bar"]})]) == CLI


def test_config_layers_put_overlays_and_cli_above_the_workflow_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.yaml").write_text("methods: [wrn]\n")
    (tmp_path / "overlay.yaml").write_text("methods: [foo]\n")
    overlay = tmp_path / "overlay.yaml"  # Snakemake passes overlays as absolute paths
    # workflow.configfiles lists the overlays first, then the workflow's own file.
    layers = config_layers([overlay, "config.yaml"], [overlay], {})
    assert [name for name, _ in layers] == ["config.yaml", "overlay.yaml"]
    assert config_origin("methods", layers) == "overlay.yaml"
    layers = config_layers([overlay, "config.yaml"], [overlay], {"methods": ["bar"]})
    assert config_origin("methods", layers) == CLI
    replaced = config_layers([overlay, "config.yaml"], [overlay], {}, replace_workflow_config=True)
    assert [name for name, _ in replaced] == ["overlay.yaml"]


def test_config_error_names_the_origin_and_the_fix():
    layers = [("config.yaml", {"methods": ["wrn"]}), ("o.yaml", {"methods": ["foo"]})]
    message = config_error("methods", "unknown method(s) foo", "use registered names", layers)
    assert message == "o.yaml: unknown method(s) foo; use registered names (`methods` in o.yaml)"
    message = config_error("methods", "unknown method(s) bar", "fix it", [*layers, (CLI, {"methods": []})])
    assert message.startswith("--config: unknown method(s) bar") and "`--config methods=...`" in message


def test_report_jobs_that_read_runs_import_no_torch():
    """The scores and cost jobs read runs (nb360.runs) but train nothing: they skip torch's import."""
    loaded = _fresh_modules("import nb360.runs")
    assert "nb360.runs" in loaded and "torch" not in loaded
