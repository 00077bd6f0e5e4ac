"""Models: the registry (:func:`create_model`) and the baselines. Importing this package registers every
built-in model: ``wrn`` (the benchmark's baseline for any task), ``wrn_point``, ``wrn_dense``, ``resnet1d``,
``trivial``, ``darts_eval`` (a searched DARTS cell network), ``amber_net`` (an AMBER architecture),
``autodeeplab_search`` and ``autodeeplab_net`` (Auto-DeepLab's search network and a decoded one),
``densenas_net`` (a DenseNAS architecture), ``perceiver_io`` and the expert networks ``expert_*``
(:mod:`nb360.models.experts`)."""

from nb360.models import (
    amber_net,  # noqa: F401 (registers "amber_net")
    autodeeplab_net,  # noqa: F401 (registers "autodeeplab_search" and "autodeeplab_net")
    darts_eval,  # noqa: F401 (registers "darts_eval")
    densenas_net,  # noqa: F401 (registers "densenas_net")
    experts,  # noqa: F401 (registers the "expert_*" networks)
    perceiver,  # noqa: F401 (registers "perceiver_io")
)
from nb360.models.registry import create_model, list_models, output_shape, register_model
from nb360.models.resnet1d import ResNet1D
from nb360.models.trivial import TrivialModel, fit_trivial
from nb360.models.wrn import WideResNet

__all__ = [
    "ResNet1D",
    "TrivialModel",
    "WideResNet",
    "create_model",
    "fit_trivial",
    "list_models",
    "output_shape",
    "register_model",
]
