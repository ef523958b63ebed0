"""The ``redteam`` command line: a module per command group, each command only parsing its
arguments and calling one importable function. ``main`` is the entry point.

Exit codes (docs/reference/exit-codes.md): 0 no finding at or above --fail-on, 1 such
findings, 2 bad usage or bad input (one line, no traceback), 3 no probe applied to the target."""

from __future__ import annotations

import errno
import os
import sys

import click

from redteam.cli import (  # noqa: F401  (each registers its commands on the group)
    audit,
    backdoor,
    data,
    demo,
    guard,
    hysac,
    protection,
    training,
)
from redteam.cli.base import Interrupted, cli
from redteam.core.errors import InputError

__all__ = ["cli", "main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point: bad input and usage errors become one line on stderr and exit code 2."""
    try:
        cli.main(args=argv, prog_name="redteam", standalone_mode=False)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0
    except Interrupted as exc:
        if exc.out is None:
            _error("interrupted")
        elif _takes_resume(argv):
            _error(f"interrupted; the finished probes are kept in {exc.out}: run the same "
                   f"command with --out {exc.out} --resume to finish it")
        else:
            _error(f"interrupted; what had finished is kept in {exc.out} (run the command "
                   f"again with a new --out, or with --overwrite)")
        return 130
    except (click.exceptions.Abort, KeyboardInterrupt):
        _error("interrupted")
        return 130
    except click.UsageError as exc:
        _error(f"{exc.format_message()} (see `redteam {_command(argv)}--help`)")
        return 2
    except InputError as exc:
        _error(str(exc))
        return 2
    except OSError as exc:
        if exc.errno not in WRITE_FAILURES:
            raise
        _error(f"{exc.filename or 'output'}: cannot be written ({os.strerror(exc.errno)}); "
               f"what was written before is left as it is")
        return 2
    except BaseException as exc:
        if type(exc).__name__ != "PanicException":  # a Rust library's panic (pyo3)
            raise
        _error(f"a native library failed on the input ({type(exc).__name__}: "
               f"{str(exc).strip()[:300]})")
        return 2
    return 0


# The file system refusing a write (full, over quota, read-only, a name too long): the user's
# environment, not a bug, so one line and exit 2 like bad input.
WRITE_FAILURES = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ENAMETOOLONG, errno.EFBIG}


def _error(message: str) -> None:
    """One line on stderr: control characters of user strings (a newline in a path, ANSI
    escapes in a JSON key) are shown escaped, never sent to the terminal."""
    shown = "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in message)
    click.echo(f"error: {shown}", err=True)


def _takes_resume(argv: list[str] | None) -> bool:
    command = cli.commands.get(_command(argv).strip())
    return command is not None and any(p.name == "resume" for p in command.params)


def _command(argv: list[str] | None) -> str:
    args = sys.argv[1:] if argv is None else argv
    first = next((a for a in args if not a.startswith("-")), None)
    return f"{first} " if first in cli.commands else ""


if __name__ == "__main__":
    sys.exit(main())
