"""The expert row: each task's hand-designed network as the paper's expert scripts built it
(more-methods.md section 5), registered under ``expert_<family>``. Importing this package registers them.

Sizes default to the originals'; keyword arguments scale them down for the smoke budget. Outputs are logits
(or raw regression values) for this package's losses and metrics: where an original ends in a sigmoid or
softmax, that last activation is left to the loss (BCE-with-logits, cross-entropy), which is the same model.
"""

from nb360.models.experts import (  # noqa: F401 (each module registers its model)
    attention_mlp,
    deepcr_unet,
    deepsea_cnn,
    densenet,
    fno,
    pdnet,
    resnet1d_ecg,
    rocket,
    s2cnn,
    vgglike,
)
