"""Options declared once: a config field holds its type, default, help text, choices and bounds.

Every setting of a command is a field of a frozen dataclass (``TrainConfig``, ``ConvertConfig``...) declared
with :func:`option`. The command-line flags are derived from these declarations (``cli/config_flags.py``), and
so is the config's own check of its values (:func:`validate`, called by each config's ``__post_init__``), so a
library user who builds a config in Python is refused exactly what a user of the flags is refused, with the
flag's name in the message. A field whose type is itself a config dataclass (``TrainConfig.augment``) contributes
its own options, flattened: ``--mixup`` sets ``TrainConfig.augment.mixup``.

No absl here: library code never reads flags.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any

from celeba_gender.core.errors import UserError


# Where a value came from, lowest precedence first (cli/config_flags.py decides).
DEFAULT, RECIPE, FLAGFILE, COMMAND_LINE = "default", "recipe", "flagfile", "command line"


class OptionError(UserError, ValueError):
    """A setting outside its declared choices or bounds, or a value that does not parse as its type."""


@dataclasses.dataclass(frozen=True)
class Spec:
    """What a field declares besides its type and default."""

    help: str
    choices: tuple | None = None  # allowed values (for tuple fields: allowed elements)
    lower: float | None = None  # inclusive bounds of numbers (of each element for tuple fields)
    upper: float | None = None
    flag: bool = True  # False: set by code, not offered on the command line
    required: bool = False
    path: bool = False  # a file or folder: "~" is expanded when it comes from the command line


def option(default: Any = dataclasses.MISSING, help: str = "", *, choices=None, lower: float | None = None,
           upper: float | None = None, flag: bool = True, path: bool = False) -> Any:
    """A dataclass field declared as an option. Without ``default`` the option is required; ``path``: the
    value names a file or folder (the command line expands ``~`` in it).

    Defaults must be immutable (numbers, strings, tuples, None, frozen dataclasses): configs are frozen.
    """
    if isinstance(default, (list, dict, set)):
        raise TypeError("option defaults must be immutable: use a tuple")
    spec = Spec(help, tuple(choices) if choices is not None else None, lower, upper, flag,
                required=default is dataclasses.MISSING, path=path)
    kwargs = {} if default is dataclasses.MISSING else {"default": default}
    return dataclasses.field(metadata={"option": spec}, **kwargs)


@dataclasses.dataclass(frozen=True)
class Option:
    """One option of a config class, flattened: ``path`` leads to it through nested configs."""

    name: str
    type: Any  # the resolved annotation: int, float, str, bool, tuple[int, int], tuple[str, ...], X | None
    default: Any
    spec: Spec
    path: tuple[str, ...]

    @property
    def optional(self) -> bool:
        """True when None is a valid value (``X | None``)."""
        return type(None) in typing.get_args(self.type) and _is_union(self.type)

    @property
    def base_type(self) -> Any:
        """The type without ``| None``."""
        if _is_union(self.type):
            args = [a for a in typing.get_args(self.type) if a is not type(None)]
            return args[0]
        return self.type

    @property
    def is_sequence(self) -> bool:
        return typing.get_origin(self.base_type) is tuple

    @property
    def element_types(self) -> tuple:
        """Element types of a tuple option: (int, int) for ``tuple[int, int]``, (str, ...) for ``tuple[str, ...]``."""
        return typing.get_args(self.base_type)


def _is_union(t) -> bool:
    return typing.get_origin(t) in (typing.Union, types.UnionType)


def is_config(cls) -> bool:
    """True for a dataclass whose fields are declared with :func:`option`."""
    return dataclasses.is_dataclass(cls) and any("option" in f.metadata for f in dataclasses.fields(cls))


@functools.cache
def options(cls) -> tuple[Option, ...]:
    """Every option of a config class, nested configs flattened, in declaration order."""
    hints = typing.get_type_hints(cls)
    out: list[Option] = []
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        if isinstance(t, type) and is_config(t):
            out += [dataclasses.replace(o, path=(f.name, *o.path)) for o in options(t)]
        elif "option" in f.metadata:
            default = f.default if f.default is not dataclasses.MISSING else None
            out.append(Option(f.name, t, default, f.metadata["option"], (f.name,)))
    names = [o.name for o in out]
    if len(set(names)) != len(names):
        raise TypeError(f"{cls.__name__}: option names repeat across nested configs: {names}")
    return tuple(out)


def get(config, option_: Option) -> Any:
    """The value of one (possibly nested) option in a config."""
    value = config
    for part in option_.path:
        value = getattr(value, part)
    return value


def flat_values(config) -> dict[str, Any]:
    """{option name: value} of a config, nested configs flattened."""
    return {o.name: get(config, o) for o in options(type(config))}


def from_flat(cls, values: Mapping[str, Any]):
    """Builds ``cls`` (and its nested configs) from {option name: value}; missing options keep their default."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        if isinstance(t, type) and is_config(t):
            kwargs[f.name] = from_flat(t, values)
        elif f.name in values:
            kwargs[f.name] = values[f.name]
    return cls(**kwargs)


def _in_bounds(value, spec: Spec) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return True
    return (spec.lower is None or value >= spec.lower) and (spec.upper is None or value <= spec.upper)


def _describe_bounds(spec: Spec) -> str:
    if spec.lower is not None and spec.upper is not None:
        return f"between {spec.lower:g} and {spec.upper:g}"
    return f">= {spec.lower:g}" if spec.lower is not None else f"<= {spec.upper:g}"


def problems(config) -> list[str]:
    """What is wrong with a config's own fields (not nested ones), against their declared choices and bounds."""
    out = []
    for o in options(type(config)):
        if len(o.path) > 1:
            continue  # a nested config checks itself
        value = get(config, o)
        if value is None:
            if o.spec.required:
                out.append(f"--{o.name} is required")
            continue
        items = value if o.is_sequence else (value,)
        if o.spec.flag and any(isinstance(v, str) and (v != v.strip() or "\n" in v) for v in items):
            # A flagfile line is read stripped, one line per flag: flags.txt could not record such a value.
            out.append(f"--{o.name}={format_value(value)!r} has leading or trailing spaces or a line break: remove "
                       "them")
            continue
        if o.spec.choices is not None:
            bad = [v for v in items if v not in o.spec.choices]
            if bad:
                out.append(f"--{o.name}={format_value(value)}: choose from {', '.join(map(str, o.spec.choices))}")
                continue
        if not all(_in_bounds(v, o.spec) for v in items):
            out.append(f"--{o.name}={format_value(value)} must be {_describe_bounds(o.spec)}")
    return out


def validate(config) -> None:
    """Raises :class:`OptionError` listing every field of ``config`` outside its declaration."""
    found = problems(config)
    if found:
        raise OptionError("; ".join(found) + ".")


def format_value(value: Any) -> str:
    """A value as the command line writes it: tuples comma-separated, None empty, booleans lower case, floats
    in their shortest form that reads back as exactly the same float (``0.0005``, ``0.0012345678``, ``3``):
    flags.txt must resume the very run it was written for."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (tuple, list)):
        return ",".join(format_value(v) for v in value)
    if isinstance(value, float):
        short = f"{value:g}"
        return short if float(short) == value else repr(value)  # repr: the shortest exact form
    return str(value)


def parse_sequence(option_: Option, items: list[str]) -> tuple | None:
    """Command-line list items -> the option's tuple (None for an empty optional one)."""
    items = [s.strip() for s in items if s.strip()]
    if not items:
        return None if option_.optional else ()
    types_ = option_.element_types
    if len(types_) == 2 and types_[1] is Ellipsis:
        types_ = (types_[0],) * len(items)
    if len(types_) != len(items):
        raise OptionError(f"--{option_.name}={','.join(items)}: give {len(types_)} comma-separated values.")
    try:
        return tuple(t(v) for t, v in zip(types_, items))
    except ValueError:
        kinds = " and ".join(sorted({t.__name__ for t in types_}))
        raise OptionError(f"--{option_.name}={','.join(items)}: give comma-separated values of type {kinds}.") from None


def iter_help(cls) -> Iterator[tuple[str, str]]:
    """(name, help) of every flag option: for documentation checks."""
    for o in options(cls):
        if o.spec.flag:
            yield o.name, o.spec.help


def as_flagfile(config, sources: Mapping[str, str] | None = None, header: str = "",
                order: tuple[str, ...] = (COMMAND_LINE, FLAGFILE, RECIPE, DEFAULT)) -> str:
    """A flagfile holding every command-line option of ``config`` with its value, one per line, grouped under
    a comment saying where the values came from (when ``sources`` maps option names to one of ``order``).
    absl flagfiles have no comments at the end of a line, hence the groups. Parsed with the command's flags,
    it gives back exactly ``config``."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    groups: dict[str, list[str]] = {}
    for o in options(type(config)):
        value = get(config, o)
        if not o.spec.flag or (value is None and not o.is_sequence):
            continue  # (an empty --name= reads back as None for sequences only)
        text = (f"--{o.name}" if value else f"--no{o.name}") if isinstance(value, bool) else \
            f"--{o.name}={format_value(value)}"
        groups.setdefault((sources or {}).get(o.name, ""), []).append(text)
    for source in [*order, *(s for s in groups if s not in order)]:
        if source in groups:
            if source:
                lines.append(f"# from the {source}" if source in (COMMAND_LINE, RECIPE) else f"# {source}s")
            lines += groups[source]
    return "\n".join(lines) + "\n"
