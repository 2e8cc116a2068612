"""Library functions take their command's settings (default.yaml, mmdrfuse.config.defaults) as
required keywords: no default literal in a signature drifts from the schema (issue 13)."""
import inspect

import pytest

from mmdrfuse.config import defaults
from mmdrfuse.data.llvip import validate
from mmdrfuse.data.patches import prepare_patches
from mmdrfuse.data.synthetic import generate
from mmdrfuse.data.yolo import build_yolo_dataset, select_subset
from mmdrfuse.fusion.infer import fuse_folder

# section -> the functions that take its settings, and the required keywords that are not settings
# (outputs and data, keys of the command line only)
TAKERS = {
    "fuse": ([fuse_folder], {"out_dir"}),
    "prepare_patches": ([prepare_patches], {"out"}),
    "prepare_synthetic": ([generate], set()),
    "prepare_yolo": ([select_subset, build_yolo_dataset], {"manifest"}),
}


def required_keywords(function):
    """The parameters of ``function`` that a caller must name: no default."""
    return {name for name, p in inspect.signature(function).parameters.items()
            if p.default is inspect.Parameter.empty and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


@pytest.mark.parametrize("section", sorted(TAKERS))
def test_every_setting_is_a_required_keyword_and_nothing_else_is(section):
    functions, data = TAKERS[section]
    keywords = set().union(*(required_keywords(f) for f in functions))
    optional = {name for f in functions for name, p in inspect.signature(f).parameters.items()
                if p.default is not inspect.Parameter.empty}
    settings = set(defaults(section))
    assert settings <= keywords, f"settings of {section} with a default in the signature: {settings & optional}"
    positional = {name for f in functions for name, p in inspect.signature(f).parameters.items()
                  if p.kind is p.POSITIONAL_OR_KEYWORD}
    assert keywords - settings - data <= positional, "required keywords that are not settings of the section"


def test_validate_takes_the_validate_settings_without_defaults():
    required = required_keywords(validate)
    assert {"split", "strict", "decode", "annotations"} <= required  # annotations = not no_annotations
    assert set(defaults("validate")) - required == {"no_annotations", "show"}  # show: only the CLI prints
