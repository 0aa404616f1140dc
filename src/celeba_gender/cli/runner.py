"""How every command runs: absl's ``app.run`` with this project's error style.

A user error, whether absl refuses a flag (unknown flag, bad enum value, missing required flag, a value out of
bounds) or the engine raises a :class:`~celeba_gender.core.errors.UserError`, prints one line
``<command>: error: <what is wrong and the fix>`` on stderr and exits with code 2. Ctrl-C exits with 130.
Whatever the order of the arguments, a flag on the command line wins over the same flag in a ``--flagfile``, and
a ``--flagfile`` is found here or among the packaged ones (:mod:`celeba_gender.cli.flagfiles`). Messages name
the commands the way the user runs them (:mod:`celeba_gender.core.invocation`). ``--help``, flag errors and
``--version`` cost no TensorFlow: the commands import it in ``main``, after the flags are parsed.
"""

from __future__ import annotations

import re
import sys
import textwrap
from collections.abc import Callable

from absl import app, flags, logging

import celeba_gender
from celeba_gender.cli import config_flags, flagfiles
from celeba_gender.core import invocation
from celeba_gender.core.errors import UserError

USER_ERROR_EXIT = 2
INTERRUPTED_EXIT = 130


def fail(prog: str, message: str) -> None:
    """Prints ``<prog>: error: <message>`` (one line) and exits with code 2."""
    print(f"{prog}: error: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(USER_ERROR_EXIT)


def _flag_error_message(error: Exception, command: str) -> str:
    text = str(error).strip()
    # absl says "flag --arch=None: Flag --arch must have a value other than None." for a missing flag.
    if "must have a value other than None" in text:
        name = text.split("Flag --", 1)[-1].split(" ", 1)[0]
        return f"--{name} is required (see --help)."
    # absl: "Unknown command line flag 'nosuch'" (and maybe ". Did you mean: ...?"): name it as it is typed.
    unknown = re.match(r"Unknown command line flag '(\w+)'(.*)$", text, re.S)
    if unknown:
        guesses = re.findall(r"\w+", unknown.group(2).split("Did you mean:", 1)[-1]) if "Did you mean" in text else []
        hint = f"did you mean {' or '.join('--' + g for g in guesses)}? " if guesses else ""
        return f"unknown flag --{unknown.group(1)}: {hint}{command} --help lists the flags."
    return f"{text.rstrip('.')} (see --help)."


def _usage(command: str, positional: bool) -> str:
    """What ``--help`` prints above the flags: a launcher's own docstring, else a usage line; then the
    packaged flagfiles."""
    main_doc = getattr(sys.modules.get("__main__"), "__doc__", None)
    if invocation.style() == invocation.LAUNCHER and main_doc:
        head = main_doc.rstrip()
    else:
        head = f"\nUSAGE: {command} [flags]" + (" FILE..." if positional else "")
    shipped = (f"--flagfile=NAME reads the file NAME, or else the flagfile NAME that ships with celeba-gender (in "
               f"{flagfiles.PACKAGED}): {flagfiles.listing().replace(',', ', ').replace(',  ', ', ')}.")
    return f"{head}\n\n{textwrap.fill(shipped, 80, break_on_hyphens=False)}\n".replace("%", "%%")


def _define_version() -> None:
    if "version" not in flags.FLAGS:
        flags.DEFINE_bool("version", False, "Print the version of celeba-gender and exit.")


def run(main: Callable[[list[str]], None], prog: str, flags_module: str, positional: bool = False) -> None:
    """Runs ``main(argv)`` under absl with one-line errors.

    ``prog``: the command's name in :data:`celeba_gender.core.invocation.COMMANDS` (and its error lines'
    prefix). ``flags_module``: the module that defined the command's flags; ``--help`` lists them whether the
    command runs as a launcher script, a console script or ``python -m``. ``positional``: whether the command
    takes arguments besides flags (predict.py's files); otherwise any is an error.
    """
    invocation.set_style()
    command = invocation.command(prog)
    _define_version()
    # absl's --help shows the key flags of the main program (sys.argv[0]): make the command's flags its own.
    for flag in [*flags.FLAGS.get_key_flags_for_module(flags_module), flags.FLAGS["version"]]:
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    if sys.modules.get("__main__") is not None:  # absl's --help prints the main module's docstring
        sys.modules["__main__"].__doc__ = _usage(command, positional)

    def parse(argv: list[str]) -> list[str]:
        try:  # the command line wins over any flagfile; flagfiles are found here or in the package
            return config_flags.parse(argv)
        except flags.Error as e:
            fail(prog, _flag_error_message(e, command))
        except UserError as e:  # a flagfile that cannot be found or read
            fail(prog, str(e))

    def guarded(argv: list[str]) -> None:
        if flags.FLAGS.version:
            print(f"{command} (celeba-gender {celeba_gender.__version__})")
            return
        if "verbosity" in flags.FLAGS and not flags.FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)  # TensorFlow's INFO lines drown the progress output
        if len(argv) > 1 and not positional:
            fail(prog, f"unexpected arguments: {' '.join(argv[1:])} (flags are written --name=value).")
        try:
            main(argv)
        except UserError as e:
            fail(prog, str(e))
        except KeyboardInterrupt:
            print(f"\n{prog}: interrupted.", file=sys.stderr)
            sys.exit(INTERRUPTED_EXIT)

    app.run(guarded, flags_parser=parse)
