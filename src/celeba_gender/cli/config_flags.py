"""absl flags derived from a config class's option declarations (``celeba_gender.core.options``), and back.

    config_flags.define(TrainConfig, __name__)                  # at import of a launcher module
    config_flags.parse(sys.argv)                                # what the commands' runner does
    config, sources = config_flags.build(TrainConfig, recipe)   # in main(), after parsing

``sources`` says where each value came from, lowest precedence first: ``default`` (the declaration),
``recipe`` (values a caller supplies, e.g. the arch's), ``flagfile``, ``command line``, whatever the order of
the arguments: the commands parse ``flagfiles_first(argv)`` (:func:`parse`), with each flagfile found here or
among the packaged ones (:mod:`celeba_gender.cli.flagfiles`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from absl import flags

from celeba_gender.cli import flagfiles
from celeba_gender.core import options

FLAGS = flags.FLAGS
DEFAULT, RECIPE, FLAGFILE, COMMAND_LINE = options.DEFAULT, options.RECIPE, options.FLAGFILE, options.COMMAND_LINE


def define(cls, module_name: str, skip: Sequence[str] = ()) -> None:
    """Defines one absl flag per command-line option of ``cls`` (nested configs flattened), owned by
    ``module_name`` (so ``--help`` lists them under that module)."""
    if module_name == "__main__":  # python -m: absl files the main module's flags under sys.argv[0]
        module_name = sys.argv[0]
    for o in options.options(cls):
        if o.spec.flag and o.name not in skip:
            _define(o, module_name)


def _define(o: options.Option, module_name: str) -> None:
    # Required options are checked by the config itself (one OptionError line), not by absl at parse time, so
    # that a flagfile without them still parses (e.g. shared settings included by others).
    common = {"flag_values": FLAGS, "module_name": module_name}
    name, help_, default, base = o.name, o.spec.help, o.default, o.base_type
    bounds = {"lower_bound": o.spec.lower, "upper_bound": o.spec.upper}
    if o.is_sequence:
        flags.DEFINE_list(name, [options.format_value(v) for v in default] if default else [], help_, **common)
    elif base is bool:
        flags.DEFINE_bool(name, default, help_, **common)
    elif base is str and o.spec.choices:
        flags.DEFINE_enum(name, default, list(o.spec.choices), help_, **common)
    elif base is str:
        flags.DEFINE_string(name, default, help_, **common)
    elif base is int:
        flags.DEFINE_integer(name, default, help_, **bounds, **common)
    elif base is float:
        flags.DEFINE_float(name, default, help_, **bounds, **common)
    else:
        raise TypeError(f"option {name}: no flag type for {o.type}")


def _is_flagfile(token: str) -> bool:
    return token.lstrip("-") == "flagfile" or token.lstrip("-").startswith("flagfile=")


def flagfiles_first(argv: Sequence[str]) -> list[str]:
    """``argv`` with its ``--flagfile`` arguments (``--flagfile=F`` or ``--flagfile F``) moved before every other
    flag, in their own order.

    absl expands a flagfile where it stands and the last value of a flag wins, so ``--lr=0.01 --flagfile=f``
    would let f's ``--lr`` win over the command line. Parsed in this order, the documented precedence holds
    whatever the order of the arguments: a flagfile over the recipe, the command line over both (flagfiles
    nested in a flagfile are expanded where they stand in it, so its own later lines win over them).
    """
    argv = list(argv)
    head, files, rest = argv[:1], [], []
    i = 1
    while i < len(argv):
        token = argv[i]
        if token == "--":  # what follows is positional
            rest += argv[i:]
            break
        if token.startswith("-") and _is_flagfile(token):
            files.append(token)
            if "=" not in token and i + 1 < len(argv):
                files.append(argv[i + 1])
                i += 1
        else:
            rest.append(token)
        i += 1
    return head + files + rest


def parse(argv: Sequence[str]) -> list[str]:
    """Parses ``argv`` (the program's name first) into the absl flags as every command does: flagfiles first
    (:func:`flagfiles_first`), each expanded where it stands (:func:`celeba_gender.cli.flagfiles.expand`);
    returns the arguments that are not flags. Raises absl's ``flags.Error`` for a bad flag and
    :class:`celeba_gender.cli.flagfiles.FlagfileError` for a flagfile that cannot be found or read."""
    return FLAGS(flagfiles.expand(flagfiles_first(argv)))


def explicit_names(argv: Sequence[str]) -> set[str]:
    """Flags named on the command line itself (not inside a --flagfile), e.g. {"batch", "arch"}."""
    names = set()
    for token in argv[1:]:
        if token == "--":
            break
        if not token.startswith("-"):
            continue
        name = token.lstrip("-").split("=", 1)[0]
        if name.startswith("no") and name not in FLAGS and name[2:] in FLAGS:
            name = name[2:]  # --noprogress
        if name != "flagfile":
            names.add(name)
    return names


def values(cls, recipe: Mapping[str, Any] | None = None, argv: Sequence[str] | None = None
           ) -> tuple[dict[str, Any], dict[str, str]]:
    """({option: value}, {option: source}) of the parsed flags of ``cls``, with ``recipe`` between the
    declared defaults and any flag that was given."""
    recipe = recipe or {}
    explicit = explicit_names(sys.argv if argv is None else argv)
    out, sources = {}, {}
    for o in options.options(cls):
        if not o.spec.flag or o.name not in FLAGS:
            if o.name in recipe:
                out[o.name], sources[o.name] = recipe[o.name], RECIPE
            continue
        flag = FLAGS[o.name]
        if flag.present:
            value, source = flag.value, (COMMAND_LINE if o.name in explicit else FLAGFILE)
        elif o.name in recipe:
            value, source = recipe[o.name], RECIPE
        else:
            value, source = flag.value, DEFAULT
        if o.is_sequence and isinstance(value, list):
            value = options.parse_sequence(o, value)
        if o.spec.path and isinstance(value, str) and "://" not in value:
            value = os.path.expanduser(value)  # the shell leaves "--out_dir=~/x" alone
        out[o.name], sources[o.name] = value, source
    return out, sources


def build(cls, recipe: Mapping[str, Any] | None = None, argv: Sequence[str] | None = None):
    """(config, sources) for the parsed flags; OptionError (one line) for values outside their declaration."""
    found, sources = values(cls, recipe, argv)
    config = options.from_flat(cls, found)
    options.validate(config)  # also for configs that do not validate themselves
    return config, sources
