"""Errors that the CLI turns into one clear line and exit code 2."""


class InputError(Exception):
    """Bad user input: a malformed model directory, a broken data line, a wrong flag.

    The message names the file (and line/field where known) and the problem; the CLI prints it
    as one line and exits with code 2, without a traceback.
    """


class UnsupportedKindError(InputError):
    """A target kind that is recognised but whose loader is not part of this release yet."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run: the finished probes are kept in ``out`` (their findings in its
    ``events.jsonl``), so the run can be resumed with ``--resume``."""

    def __init__(self, out) -> None:
        super().__init__(str(out))
        self.out = out
