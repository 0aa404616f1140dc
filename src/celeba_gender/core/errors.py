"""The one base class of every error a user can fix: the commands print its message as one line, exit code 2.

Each part of the engine raises its own subclass (``ConvertError``, ``DataError``, ``TrainError``...), whose
message names the problem and the fix. Anything else that escapes is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the input, the flags or the environment that the user can fix; the message says how."""
