"""Where a configuration value came from, so that a config error names the file (or ``--config``) to fix.

Snakemake merges, in increasing precedence: the workflow's ``configfile:`` (``config.yaml``), each
``--configfile`` overlay in order, then ``--config key=value`` pairs. A value that the schema accepts but the
workflow refuses (an unknown method, ...) is blamed on the last of these layers that sets its key.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

CLI = "--config"

Layer = tuple[str, Mapping[str, Any]]  # (its name: a config file's path or "--config", its values)


def _load(path: str | os.PathLike) -> Mapping[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text())  # YAML or JSON, as Snakemake reads them
    except (OSError, yaml.YAMLError):
        return {}  # unreadable now: then it sets nothing we can see
    return data if isinstance(data, Mapping) else {}


def _shown(path: str | os.PathLike) -> str:
    """A config file as the user would type it: relative to the working directory when inside it."""
    rel = os.path.relpath(os.path.abspath(path))
    return rel if not rel.startswith("..") else str(path)


def config_layers(
    workflow_files: Iterable[str | os.PathLike],
    overlays: Sequence[str | os.PathLike],
    cli: Mapping[str, Any],
    replace_workflow_config: bool = False,
) -> list[Layer]:
    """The layers of a Snakemake config, lowest precedence first: ``workflow_files`` are all the config
    files Snakemake loaded (``workflow.configfiles``, overlays included), ``overlays`` the ``--configfile``
    ones, ``cli`` the ``--config`` values; ``--replace-workflow-config`` drops the workflow's own file."""
    over = {os.path.abspath(f) for f in overlays}
    base = [] if replace_workflow_config else [f for f in workflow_files if os.path.abspath(f) not in over]
    layers: list[Layer] = [(_shown(f), _load(f)) for f in base]
    layers += [(_shown(f), _load(f)) for f in overlays]
    if cli:
        layers.append((CLI, cli))
    return layers


def config_origin(key: str, layers: Sequence[Layer]) -> str:
    """The layer that set ``key`` (dotted for nested keys, e.g. ``train.budget``): the last one holding it.
    With no layer holding it (a schema default), the lowest layer, where the key would go."""
    parts = key.split(".")
    for name, values in reversed(layers):
        node: Any = values
        for part in parts:
            if not isinstance(node, Mapping) or part not in node:
                break
            node = node[part]
        else:
            return name
    return layers[0][0] if layers else "config.yaml"


def config_error(key: str, problem: str, fix: str, layers: Sequence[Layer]) -> str:
    """A config error message naming where ``key`` was set and how to fix it there."""
    origin = config_origin(key, layers)
    where = f"`{CLI} {key}=...`" if origin == CLI else f"`{key}` in {origin}"
    return f"{origin}: {problem}; {fix} ({where})"
