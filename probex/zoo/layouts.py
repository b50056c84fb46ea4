"""Find the models of a zoo on disk: detect which of the three layouts a folder holds and read it.

``"probex-manifest"``
    Our own layout: ``probex_zoo.json`` at the root (see :mod:`probex.zoo.manifest`).
``"modelj-generative"``
    Model-J SD LoRA models, ``{split}/model_idx_XXXX/pytorch_lora_weights.safetensors`` with
    ``training_images/`` (see :mod:`probex.zoo.modelj`).
``"modelj-discriminative"``
    Model-J ViT / ResNet models in the Hugging Face cache layout,
    ``{split}/models--ProbeX--Model-J__MAE__model_idx_XXXX/snapshots/<rev>/model.safetensors``
    (see :mod:`probex.zoo.modelj`).

The checks run in that order. Every weight file's header is read and validated when the zoo
is opened (never its tensors); a model that cannot be read is left out and listed, with the
reason, in the scan's ``skipped``. In every layout, a PEFT ``adapter_config.json`` beside a
weight file is read too: its LoRA fields (``lora_alpha``, ``r``, ``use_rslora``, ``alpha_pattern``,
``use_dora``) go into the record's metadata as ``peft_adapter_config``, so that the layer's scale
is the one PEFT applies (see :mod:`probex.zoo.lora`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from probex.errors import ZooError
from probex.progress import Progress
from probex.storage import read_regular_bytes
from probex.zoo.folders import ZooScan
from probex.zoo.lora import PEFT_CONFIG_KEY, peft_adapter_config
from probex.zoo.manifest import MANIFEST_NAME, scan_manifest
from probex.zoo.modelj import LORA_WEIGHTS, discriminative_groups, generative_root, scan_discriminative, scan_generative

logger = logging.getLogger(__name__)


def scan_zoo(root: str | os.PathLike, progress: Progress | None = None) -> ZooScan:
    """Detect the layout of ``root`` and read every model's record (headers only).

    Raises:
        ZooError: ``root`` does not exist, or matches none of the layouts (the message says
            what was looked for), or its manifest is malformed.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ZooError(f"{root}: no such folder; give the folder that holds the model zoo")
    if os.path.lexists(root / MANIFEST_NAME):  # a FIFO or a link there is refused with a reason, not passed over
        scan = scan_manifest(root, progress)
    elif (generative := generative_root(root)) is not None:
        scan = scan_generative(generative, progress)
    elif groups := discriminative_groups(root):
        scan = scan_discriminative(root, groups, progress)
    else:
        raise ZooError(
            f"{root}: no model zoo found. Looked for {MANIFEST_NAME} (a probex zoo), "
            f"{{split}}/model_idx_XXXX/{LORA_WEIGHTS} (Model-J generative) and "
            "{split}/models--OWNER--NAME/snapshots/REV/*.safetensors (Model-J discriminative, the "
            "Hugging Face cache layout). Point probex at the zoo's root folder, or download one "
            "with `probex download`."
        )
    for record in scan.records:
        _read_adapter_config(record)
    for path, reason in scan.skipped:
        logger.warning("skipped %s: %s", path, reason)
    if not scan.records:
        logger.warning("%s: no readable model in this %s zoo", root, scan.layout)
    return scan


_MAX_ADAPTER_CONFIG_BYTES = 1024 * 1024


def _read_adapter_config(record) -> None:
    """Keep the LoRA fields of a PEFT ``adapter_config.json`` beside the record's weight file in its metadata."""
    path = Path(record.path).parent / "adapter_config.json"
    if PEFT_CONFIG_KEY in record.metadata:
        return
    try:
        text = read_regular_bytes(path, _MAX_ADAPTER_CONFIG_BYTES, "adapter_config.json").decode("utf-8")
    except (OSError, UnicodeDecodeError, ZooError):
        # absent, not a regular file (a FIFO would block a plain open), too large or not text:
        # the record keeps whatever scaling its weight file's own metadata gives
        return
    fields = peft_adapter_config(text)
    if fields is not None:
        record.metadata[PEFT_CONFIG_KEY] = fields
