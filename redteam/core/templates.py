"""Jinja templates from untrusted files, rendered within a budget.

A tokenizer's chat template and a ``--prompt-format`` file are code of someone else's, run in
Jinja's immutable sandbox (no attribute tricks, no imports). The sandbox bounds what a template
may touch, not how long it runs or how much it builds: nested ``range(100000)`` loops run for
minutes and ``'a' * 10**10`` asks for 10 GB. ``render_budget`` bounds both:

- repetition (``*`` on strings and lists, ``**``) is checked before it runs: a result over
  ``MAX_RENDERED`` characters or items is refused;
- the render gets ``RENDER_SECONDS`` of wall time (``core.budget.deadline``), and its output
  ``MAX_RENDERED`` characters;
- anything a template raises (``1/0``, a recursion, memory) is one line naming the template.
"""

from __future__ import annotations

import operator
from collections.abc import Callable

from redteam.core.budget import BudgetExceeded, deadline
from redteam.core.errors import InputError

RENDER_SECONDS = 5.0
MAX_RENDERED = 1_000_000  # characters of output, and items a repetition may build


def _bounded_binop(self, context, name: str, left, right):
    """The sandbox's hook for intercepted operators: repetition and powers sized first."""
    if name == "*":
        for sequence, count in ((left, right), (right, left)):
            if isinstance(sequence, str | list | tuple) and isinstance(count, int) \
                    and len(sequence) * max(count, 0) > MAX_RENDERED:
                raise BudgetExceeded(f"a repetition of {len(sequence) * count:,} "
                                             f"items")
        return operator.mul(left, right)
    if name == "**":
        if isinstance(left, int) and isinstance(right, int) and right > 64 and abs(left) > 1:
            raise BudgetExceeded(f"the power {left} ** {right}")
        return operator.pow(left, right)
    return self.binop_table[name](left, right)


def _install() -> None:
    """Intercept ``*`` and ``**`` in every sandboxed template compiled from now on (the
    sandbox's own mechanism; transformers compiles chat templates in the same sandbox class)."""
    from jinja2.sandbox import SandboxedEnvironment

    SandboxedEnvironment.intercepted_binops = frozenset({"*", "**"})
    SandboxedEnvironment.call_binop = _bounded_binop


def render_bounded(render: Callable[[], str], what: str) -> str:
    """``render()`` (a sandboxed template's render) within the budget; any failure is one
    ``InputError`` line naming ``what``."""
    _install()
    try:
        with deadline(RENDER_SECONDS):
            text = render()
    except InputError:
        raise
    except BudgetExceeded as exc:
        raise InputError(f"{what}: refused, past the rendering budget ({exc}; at most "
                         f"{RENDER_SECONDS:g} s and {MAX_RENDERED:,} characters)") from None
    except Exception as exc:  # noqa: BLE001  (a template is code of someone else's)
        message = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise InputError(f"{what}: failed to render ({type(exc).__name__}"
                         f"{': ' + message if message else ''})") from None
    if not isinstance(text, str) or len(text) > MAX_RENDERED:
        size = len(text) if isinstance(text, str) else 0
        raise InputError(f"{what}: refused, past the rendering budget ({size:,} characters; "
                         f"at most {MAX_RENDERED:,})")
    return text
