"""What the experiments' command lines share: absl's entry point, and flags made from the training settings.

    if __name__ == "__main__":
        cli.run(main, define_flags)            # main(options) gets the parsed flags; stray arguments are refused

`define_run_flags` gives every field of `tfhyper.training.RunConfig` a flag (type, default, bounds and choices from
the field, help text from the field's description), and `run_config` builds the RunConfig back from them, so that a
new training setting is written once, in RunConfig, and `experiments.train` and `experiments.sweep` take it up.
Nothing here defines a flag on import: importing a program's module adds no flags to another program.
"""
import dataclasses
import types
import typing

from absl import app, flags

from tfhyper.training import RunConfig

# The flags defined here belong to the program that asks for them, so that its --help lists them.
flags.disclaim_key_flags()

# absl's definition of a flag for a setting of each type (a bool flag also takes --noNAME).
_DEFINE = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float, str: flags.DEFINE_string}
_BOUNDS = ("lower_bound", "upper_bound")


def run(main, define_flags=None):
    """Run `main(options)` as the program, `options` being the parsed flags (`define_flags()` defines them first).

    Positional arguments are refused with absl's usage message, as the programs take only flags.
    """
    if define_flags is not None:
        define_flags()

    def checked(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        return main(flags.FLAGS)

    app.run(checked)


def described(choices):
    """"a (what a is), b (what b is)" for a mapping value -> description, "a, b" for other choices."""
    if isinstance(choices, typing.Mapping):
        return ", ".join(f"{value} ({description})" for value, description in choices.items())
    return ", ".join(choices)


def setting_fields(names=None):
    """The fields of RunConfig (those named, in that order), each with its flag's description in `metadata`."""
    fields = {field.name: field for field in dataclasses.fields(RunConfig)}
    unknown = [name for name in names or () if name not in fields]
    if unknown:
        raise ValueError(f"RunConfig has no setting {', '.join(unknown)}")
    return [fields[name] for name in names] if names is not None else list(fields.values())


def setting_type(field):
    """The type of a setting's values, None aside: int for `int | None`."""
    kinds = [kind for kind in typing.get_args(field.type) if kind is not type(None)] \
        if isinstance(field.type, types.UnionType) else [field.type]
    if len(kinds) != 1 or kinds[0] not in _DEFINE:
        raise TypeError(f"RunConfig.{field.name} is a {field.type}; a flag takes one of bool, int, float, str")
    return kinds[0]


def define_run_flags(names=None, default=dataclasses.MISSING, help_text="{help}", bounds=None,
                     flag_values=flags.FLAGS):
    """One flag per RunConfig setting (all, or those named), of the setting's name, type, default and choices.

    default: every flag's default instead of the settings' own (e.g. None: "not given").
    help_text: the help text, "{help}" standing for the setting's description; described choices follow it.
    bounds: name -> {"lower_bound": .., "upper_bound": ..} replacing a setting's own bounds.
    """
    for field in setting_fields(names):
        description = dict(field.metadata)
        text = description.pop("help")
        choices = description.pop("choices", None)
        value = field.default if default is dataclasses.MISSING else default
        if choices is not None:
            choices = choices() if callable(choices) else choices
            if isinstance(choices, typing.Mapping):
                text = f"{text}: {described(choices)}."
            flags.DEFINE_enum(field.name, value, list(choices), help_text.format(help=text), flag_values=flag_values)
            continue
        kind = setting_type(field)
        limits = {key: description[key] for key in _BOUNDS if key in description}
        limits.update((bounds or {}).get(field.name, {}))
        _DEFINE[kind](field.name, value, help_text.format(help=text), flag_values=flag_values, **limits)


def run_config(options=flags.FLAGS, **settings):
    """The RunConfig of the parsed flags of `define_run_flags()`; `settings` replace the flags' values.

    A setting whose flag has an "off" value (clip_norm's 0: no clipping) is None when the flag has that value.
    """
    values = {}
    for field in setting_fields():
        value = settings[field.name] if field.name in settings else options[field.name].value
        if "off" in field.metadata and value == field.metadata["off"]:
            value = None
        values[field.name] = value
    return RunConfig(**values)
