"""Command templates the user writes (a trainer, a device that is a command): their placeholders
checked before anything runs, and filled in shell-quoted, since an arch string holds `|` and `~`."""

from __future__ import annotations

import shlex
import string

from nasctl.errors import UserError


def placeholders(template: str, known: tuple[str, ...], where: str) -> set[str]:
    """The placeholders a template uses; an unknown one, or a malformed brace, is bad input."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as e:
        raise UserError(f"{where}: {e} (write a literal brace as {{{{ or }}}})") from None
    unknown = names - set(known)
    if unknown:
        raise UserError(f"{where}: unknown placeholder(s) {', '.join('{' + n + '}' for n in sorted(unknown))} "
                        f"(known: {', '.join('{' + n + '}' for n in known)})")
    return names


def fill(template: str, **values) -> str:
    """The command line with each placeholder's value shell-quoted."""
    return template.format(**{k: shlex.quote(str(v)) for k, v in values.items()})
