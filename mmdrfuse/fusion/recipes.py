"""Training recipes and options: the ``train_<kind>`` section of ``cfg/default.yaml``, a recipe, overrides.

Two recipes differ in four settings (every other key is shared, and an explicit option wins):

=============  ===========================  =====================================
key            ``paper`` (default)          ``release`` (the authors' released code)
=============  ===========================  =====================================
refresh        ``sample`` (per patch)       ``batch`` (one decision on batch means)
distill_norm   ``sample`` (paper's vec(.))  ``batch`` (one norm over the batch)
amp            ``true`` (bf16 VGG on CUDA)  ``false`` (fp32)
shuffle        ``epoch``                    teacher ``once``, student ``epoch``
=============  ===========================  =====================================

``shuffle``: ``epoch`` visits the patches in ``default_rng([seed, epoch]).permutation`` order;
``once`` shuffles once (the epoch-0 order) and keeps that order for every epoch, as the released
teacher script does. The refresh losses run in fp32 under either ``amp`` (see ``train.Trainer``).
"""
from __future__ import annotations

from typing import Any, Dict

import numpy as np

from mmdrfuse.config import defaults
from mmdrfuse.fusion.distill import MODES as DISTILL_MODES
from mmdrfuse.fusion.distill import NORMS as DISTILL_NORMS
from mmdrfuse.fusion.perceptual import BACKBONES
from mmdrfuse.fusion.refresh import RULES

KINDS = ("teacher", "student")
SHUFFLES = ("epoch", "once")
RECIPES: Dict[str, Dict[str, Dict[str, Any]]] = {
    "paper": {
        "teacher": {"refresh": "sample", "amp": True, "shuffle": "epoch"},
        "student": {"refresh": "sample", "distill_norm": "sample", "amp": True, "shuffle": "epoch"},
    },
    "release": {
        "teacher": {"refresh": "batch", "amp": False, "shuffle": "once"},
        "student": {"refresh": "batch", "distill_norm": "batch", "amp": False, "shuffle": "epoch"},
    },
}
RUN_KEYS = {"limit": None, "max_steps": None, "resume": False}


def training_config(kind: str, overrides: Dict[str, Any]) -> Dict[str, Any]:
    """The ``train_<kind>`` defaults, then ``overrides``, then the recipe's value of every key still
    ``None`` (see :data:`RECIPES`); checked."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    config = {**defaults(f"train_{kind}"), **RUN_KEYS}
    config.pop("out", None)  # the command line's default folder; train_model takes out_dir
    unknown = sorted(set(overrides) - set(config))
    if unknown:
        raise ValueError(f"unknown training option(s) for {kind}: {', '.join(unknown)}")
    config.update(overrides)
    if config["recipe"] not in RECIPES:
        raise ValueError(f"recipe must be one of {tuple(RECIPES)}, got {config['recipe']!r}")
    for key, value in RECIPES[config["recipe"]][kind].items():
        if config[key] is None:
            config[key] = value
    choices = {"refresh": RULES, "perceptual": BACKBONES, "shuffle": SHUFFLES}
    if kind == "student":
        choices.update(distill=DISTILL_MODES, distill_norm=DISTILL_NORMS)
    for key, allowed in choices.items():
        if config[key] not in allowed:
            raise ValueError(f"{key} must be one of {allowed}, got {config[key]!r}")
    for key in ("epochs", "batch"):
        if int(config[key]) < 1:
            raise ValueError(f"{key} must be at least 1, got {config[key]}")
    config["amp"] = bool(config["amp"])
    return config


def epoch_order(seed: int, epoch: int, count: int, *, shuffle: str = "epoch") -> np.ndarray:
    """The patch order of one epoch: a permutation that depends only on (seed, epoch), or with
    ``shuffle="once"`` only on the seed (the epoch-0 order every epoch)."""
    if shuffle not in SHUFFLES:
        raise ValueError(f"shuffle must be one of {SHUFFLES}, got {shuffle!r}")
    return np.random.default_rng([seed, epoch if shuffle == "epoch" else 0]).permutation(count)
