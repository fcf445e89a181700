"""experiments.cli: a flag per training setting, with the settings' defaults, bounds and choices."""
import dataclasses

import pytest
from absl import flags

from experiments import cli
from tfhyper import paper
from tfhyper.models import MODELS
from tfhyper.training import RunConfig

# What `python -m experiments.train` has taken since its flags were written by hand: name -> (default, lower
# bound, upper bound, choices). A setting's flag must not change under its users.
TRAIN_FLAGS = {
    "model": ("hyperprior", None, None, sorted(MODELS)),
    "distortion": ("mse", None, None, ["ms-ssim", "mse"]),
    "quality": (3, 1, 8, None),
    "lmbda": (None, None, None, None),
    "num_filters": (None, 1, None, None),
    "latent_filters": (None, 1, None, None),
    "data": (None, None, None, None),
    "steps": (1_000_000, 1, None, None),
    "batch_size": (paper.BATCH_SIZE, 1, None, None),
    "patch_size": (paper.PATCH_SIZE, 16, None, None),
    "learning_rate": (paper.LEARNING_RATE, None, None, None),
    "learning_rate_decay": ("none", None, None, ["cosine", "none"]),
    "checkpoint_every": (1000, 1, None, None),
    "downsample": (False, None, None, None),
    "screen_saturation": (False, None, None, None),
    "precision": ("float32", None, None, ["float32", "mixed_bfloat16"]),
    "seed": (0, None, None, None),
    "initializer": (paper.INITIALIZER, None, None, ["fan_in_uniform", "glorot_uniform"]),
    "density_init_scale": (paper.DENSITY_INIT_SCALE, 0.001, None, None),
    "adam_epsilon": (paper.ADAM_EPSILON, 0.0, None, None),
    "clip_norm": (paper.GRADIENT_CLIP_NORM, 0.0, None, None),
    "strategy": ("default", None, None, ["default", "mirrored", "multi_worker", "tpu"]),
    "devices": (None, None, None, None),
    "init_from": (None, None, None, None),
    "jit_compile": ("auto", None, None, ["auto", "off", "on"]),
}


def _defined(*names, **options):
    values = flags.FlagValues()
    cli.define_run_flags(*names, flag_values=values, **options)
    return values


def _described(flag):
    parser = flag.parser
    choices = sorted(parser.enum_values) if hasattr(parser, "enum_values") else None
    return flag.default, getattr(parser, "lower_bound", None), getattr(parser, "upper_bound", None), choices


def test_every_setting_has_its_flag_with_the_same_default_bounds_and_choices():
    values = _defined()
    assert {name: _described(values[name]) for name in values} == TRAIN_FLAGS
    assert set(TRAIN_FLAGS) == {field.name for field in dataclasses.fields(RunConfig)}
    assert all(values[name].help for name in values)


def test_the_flags_give_back_the_run_config():
    values = _defined()
    values(["train"])
    assert cli.run_config(values) == RunConfig()
    values(["train", "--model=factorized", "--quality=5", "--lmbda=0.02", "--nodownsample", "--clip_norm=0",
            "--learning_rate_decay=cosine"])
    config = cli.run_config(values)
    assert (config.model, config.quality, config.lmbda, config.learning_rate_decay) == ("factorized", 5, 0.02, "cosine")
    assert config.clip_norm is None  # 0 is "no clipping", stored as a run without clipping always was
    assert cli.run_config(values, seed=7).seed == 7


@pytest.mark.parametrize("argument", ["--quality=9", "--patch_size=8", "--model=jpeg", "--clip_norm=-1"])
def test_values_outside_a_setting_are_refused(argument):
    with pytest.raises(flags.IllegalFlagValueError):
        _defined()(["train", argument])


def test_overriding_flags_default_to_none_with_their_own_bounds_and_help():
    values = _defined(["steps", "learning_rate", "learning_rate_decay"], default=None,
                      help_text="{help} Default: the preset's.", bounds={"learning_rate": {"lower_bound": 0}})
    assert sorted(values) == ["learning_rate", "learning_rate_decay", "steps"]
    values(["sweep"])
    assert values["steps"].value is None and values["learning_rate_decay"].value is None
    assert values["learning_rate_decay"].help.endswith("last step). Default: the preset's.")
    assert _described(values["learning_rate"])[1] == 0
    with pytest.raises(flags.IllegalFlagValueError):
        values(["sweep", "--learning_rate=-1"])


def test_unknown_settings_are_refused():
    with pytest.raises(ValueError, match="no setting epochs"):
        _defined(["steps", "epochs"])


def test_the_flags_belong_to_the_program_that_defines_them():
    # A program's --help lists its own module's flags only: flags filed under experiments.cli would go unlisted.
    values = _defined(["steps"])
    assert [flag.name for flag in values.flags_by_module_dict()[__name__]] == ["steps"]
    assert not flags.FLAGS.flags_by_module_dict().get(cli.__name__)  # and importing cli defines none
