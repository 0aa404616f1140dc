"""How the user runs the commands, so that messages name a command the user has.

The same command runs three ways: the installed console script (``celeba-train``), a launcher script of a
clone (``python train.py``) or the module (``python -m celeba_gender.cli.train``). The command line sets the
way once (:func:`set_style`, from ``sys.argv[0]``); library code asks :func:`command` for the words of any
command, e.g. in ``Rerun {command('make_tfrecords')} --out_dir=...``. Commands this process starts (a study's
runs) inherit the way through the environment, so their messages name commands the same way. Library code
that runs without a command line (a notebook, the tests) gets the console scripts' names.
"""

from __future__ import annotations

import os
import sys

# name -> (console script, launcher script, module)
COMMANDS = {
    "make_tfrecords": ("celeba-make-tfrecords", "make_tfrecords.py", "celeba_gender.cli.convert"),
    "train": ("celeba-train", "train.py", "celeba_gender.cli.train"),
    "evaluate": ("celeba-evaluate", "evaluate.py", "celeba_gender.cli.evaluate"),
    "predict": ("celeba-predict", "predict.py", "celeba_gender.cli.predict"),
    "study": ("celeba-study", "study.py", "celeba_gender.cli.study"),
    "synthetic": ("celeba-synthetic", None, "celeba_gender.cli.synthetic"),
}
CONSOLE, LAUNCHER, MODULE = "console", "launcher", "module"
ENV = "CELEBA_GENDER_INVOKED_AS"  # "console", "module" or "launcher:<folder of the launchers>"

_style = (CONSOLE, "")


def detect(argv0: str, main_module: str | None) -> tuple[str, str]:
    """(style, launcher folder) of a process started as ``argv0`` whose ``__main__`` is ``main_module``
    (its ``__spec__.name``, None for a script)."""
    if main_module and main_module.startswith("celeba_gender.cli."):
        return MODULE, ""
    if argv0.endswith(".py"):
        return LAUNCHER, os.path.dirname(argv0)
    return CONSOLE, ""


def set_style(argv0: str | None = None, main_module: str | None = None) -> None:
    """Records how this command was run: inherited from a parent command when it started this one, else
    detected from ``argv0`` (default ``sys.argv[0]``) and the ``__main__`` module; passed on to children."""
    global _style
    inherited = os.environ.get(ENV, "")
    if inherited:
        style, _, folder = inherited.partition(":")
        _style = (style, folder)
    else:
        if argv0 is None:
            argv0 = sys.argv[0]
            spec = getattr(sys.modules.get("__main__"), "__spec__", None)
            main_module = spec.name if spec else None
        _style = detect(argv0, main_module)
    os.environ[ENV] = f"{_style[0]}:{_style[1]}" if _style[0] == LAUNCHER else _style[0]


def style() -> str:
    """How this process's command was run: :data:`CONSOLE`, :data:`LAUNCHER` or :data:`MODULE`."""
    return _style[0]


def command(name: str) -> str:
    """The words that run command ``name`` the way the user runs them: ``celeba-train``, ``python train.py``
    (in the launchers' folder as the user named it) or ``python -m celeba_gender.cli.train``."""
    console, launcher, module = COMMANDS[name]
    style, folder = _style
    if style == LAUNCHER and launcher:
        return f"python {os.path.join(folder, launcher)}"
    if style == MODULE or (style == LAUNCHER and not launcher):
        return f"python -m {module}"
    return console
