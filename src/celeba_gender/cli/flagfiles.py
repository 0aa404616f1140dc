"""The flagfiles that ship with the package, and how every command finds a ``--flagfile``.

``--flagfile=NAME`` reads the file NAME when there is one (relative to the current folder, ``~`` expanded);
otherwise the flagfile of that path among those that ship in the package's ``flags/`` folder, so that
``--flagfile=smoke.flags`` and ``--flagfile=source/inceptionv3.flags`` work from any folder once the package is
installed. A leading ``flags/`` is allowed (``--flagfile=flags/demo.flags``, as commands written for a clone of
the repository say it). A ``--flagfile=`` line inside a flagfile is found the same way, except that inside a
packaged flagfile it names a packaged file first (a file of the same name in the current folder does not
replace part of a packaged protocol).

The commands expand the flagfiles here, before absl parses the flags (:func:`expand`), with absl's rules for
their lines (blank lines and lines starting with ``#`` or ``//`` skipped, each other line one argument, stripped).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from celeba_gender.core.errors import UserError

PACKAGED = Path(__file__).resolve().parent.parent / "flags"
_PREFIX = "flags/"


class FlagfileError(UserError):
    """A --flagfile that cannot be found or read, or that includes itself."""


def packaged() -> list[str]:
    """The packaged flagfiles, as the names ``--flagfile=`` takes (``demo.flags``, ``source/alexnet.flags``...)."""
    return sorted(p.relative_to(PACKAGED).as_posix() for p in PACKAGED.rglob("*.flags"))


def listing() -> str:
    """The packaged flagfiles in one line, grouped by folder: ``demo.flags, smoke.flags, convert/{demo,...}``."""
    groups: dict[str, list[str]] = {}
    for name in packaged():
        folder, _, file = name.rpartition("/")
        groups.setdefault(folder, []).append(file[: -len(".flags")])
    parts = [f"{stem}.flags" for stem in groups.pop("", [])]
    parts += [f"{folder}/{{{','.join(stems)}}}.flags" for folder, stems in sorted(groups.items())]
    return ", ".join(parts)


def _packaged_path(name: str) -> Path | None:
    relative = name[len(_PREFIX):] if name.startswith(_PREFIX) else name
    path = (PACKAGED / relative).resolve()
    if relative and not os.path.isabs(relative) and PACKAGED in path.parents and path.is_file():
        return path
    return None


def resolve(name: str, inside_package: bool = False) -> str:
    """The file ``--flagfile=name`` reads: ``name`` when it is a file here, else the packaged flagfile of that
    path (a leading ``flags/`` allowed); ``inside_package``: an include of a packaged flagfile, which looks in
    the package first. Raises :class:`FlagfileError` (naming what ships) when neither exists."""
    name = os.path.expanduser(name.strip())
    packaged_path = _packaged_path(name)
    if inside_package and packaged_path:
        return str(packaged_path)
    if os.path.isfile(name):
        return name
    if packaged_path:
        return str(packaged_path)
    if os.path.isdir(name):
        raise FlagfileError(f"--flagfile={name} is a folder: name a file of flags.")
    raise FlagfileError(f"--flagfile={name}: no such file here, nor among the flagfiles that ship with "
                        f"celeba-gender ({listing()}).")


def _is_directive(token: str) -> bool:
    return token.startswith(("--flagfile=", "-flagfile=")) or token in ("--flagfile", "-flagfile")


def _lines(path: str, stack: list[str]) -> list[str]:
    """The arguments a flagfile holds, its includes expanded where they stand."""
    key = os.path.realpath(path)
    if key in stack:
        chain = " -> ".join(os.path.basename(p) for p in [*stack, key])
        raise FlagfileError(f"the flagfile {path} includes itself ({chain}): remove one of those --flagfile lines.")
    try:
        with open(path) as f:
            lines = f.readlines()
    except OSError as e:
        raise FlagfileError(f"cannot read the flagfile {path}: {e.strerror or e}.") from None
    inside_package = PACKAGED in Path(key).parents
    out = []
    for line in lines:
        if line.isspace() or line.startswith(("#", "//")):
            continue
        if line.startswith(("--flagfile=", "-flagfile=")):
            name = line.split("=", 1)[1].strip()
            if name:
                out += _lines(resolve(name, inside_package), [*stack, key])
            continue
        out.append(line.strip())
    return out


def expand(argv: Sequence[str]) -> list[str]:
    """``argv`` with each ``--flagfile=NAME`` (or ``--flagfile NAME``) replaced by the arguments of the file it
    names (:func:`resolve`), where it stands; nothing after ``--`` is touched."""
    argv = list(argv)
    out, i = argv[:1], 1
    while i < len(argv):
        token = argv[i]
        if token == "--":
            out += argv[i:]
            break
        if _is_directive(token):
            if "=" in token:
                name = token.split("=", 1)[1]
            elif i + 1 < len(argv):
                i += 1
                name = argv[i]
            else:
                raise FlagfileError("--flagfile needs a file name: --flagfile=NAME.")
            if name.strip():  # absl ignores an empty --flagfile=
                out += _lines(resolve(name), [])
        else:
            out.append(token)
        i += 1
    return out
