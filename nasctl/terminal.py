"""What the CLI prints for people: help, tables and logs that read at 80 columns and in a pipe.

Help. typer's own option panel spends six columns on names, short names, negative names and types, so
at 80 columns the help text is squeezed into a strip a word wide and a choice list is cut
mid-word. Here each option is two columns: its names and a one-word metavar (never wrapped; a
negative flag on its own line), then the help, which wraps at spaces only. Choices and number
ranges are words in the help, and the required mark stays where typer puts it. typer looks up
`_print_options_panel` on its module at each call, so `install()` replaces that one function.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from types import UnionType
from typing import Union, get_args, get_origin

import typer.rich_utils as ru
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text


def examples(*commands: str) -> str:
    """A command's epilog: runnable examples, one a line (each kept under 78 characters so that
    an 80-column terminal never folds one; tests/test_cli_help.py checks)."""
    return "Examples:\n\n" + "\n".join(f"  {escape(c)}" for c in commands)


def _kind(param) -> type:
    """The option's value type, with Optional[...] and list[...] taken off."""
    t = param.type_descriptor.annotation
    while get_origin(t) in (Union, UnionType, list):
        t = next(a for a in get_args(t) if a is not type(None))
    return t


def _choices(param) -> list[str]:
    t = _kind(param)
    return [e.value for e in t] if isinstance(t, type) and issubclass(t, Enum) else []


def _metavar(param) -> str:
    if getattr(param, "is_flag", False):
        return ""
    if _choices(param):
        return param.name.upper()
    return {int: "INT", float: "NUMBER", Path: "PATH"}.get(_kind(param), "TEXT")


def _range(param) -> str:
    lo, hi = getattr(param, "min", None), getattr(param, "max", None)
    fmt = (lambda v: f"{v:,}") if _kind(param) is int else (lambda v: f"{v:g}")
    if lo is not None and hi is not None:
        return f"{fmt(lo)} to {fmt(hi)}"
    if lo is not None or hi is not None:
        return f"at least {fmt(lo)}" if lo is not None else f"at most {fmt(hi)}"
    return ""


def _names(param) -> Text:
    if param.param_type_name == "argument":
        return Text(param.display_name_raw, style=ru.STYLE_OPTION)
    first = ", ".join(sorted(param.opts, key=lambda o: (not o.startswith("--"), o)))
    text = Text(first, style=ru.STYLE_SWITCH if getattr(param, "is_flag", False) else ru.STYLE_OPTION)
    meta = _metavar(param)
    if meta:
        text.append(f" {meta}", style=ru.STYLE_TYPES)
    if param.default is not False:  # "--no-x" undoes a default that is on; "off" needs no second name
        for neg in param.secondary_opts:
            text.append(f"\n  {neg}", style=ru.STYLE_NEGATIVE_OPTION)
    return text


def _help(param, ctx, markup_mode) -> Text:
    """typer's help, default and required mark, with the choices and the range, as one paragraph."""
    raw = param.help  # plain text: "[user@]host" is not a markup tag
    param.help = escape(raw) if raw else raw
    try:
        parts = list(ru._get_parameter_help(param=param, ctx=ctx, markup_mode=markup_mode).renderables)
    finally:
        param.help = raw
    if getattr(param, "is_flag", False) and param.default is False:  # "[default: no-x]" says nothing
        parts = [t for t in parts if not t.plain.startswith("[default:")]
    extra = "; ".join(t for t in ("one of: " + ", ".join(_choices(param)) if _choices(param) else "", _range(param)) if t)
    if extra:
        parts.insert(1 if getattr(param, "help", None) else 0, Text(f"({extra})", style=ru.STYLE_OPTION_DEFAULT))
    return Text(" ").join(parts)


def _options_panel(*, name, params, ctx, markup_mode, console) -> None:
    if not params:
        return
    table = Table(show_header=False, box=None, expand=True, padding=(0, 1), pad_edge=False)
    table.add_column(no_wrap=True)
    table.add_column(ratio=1)
    for p in params:
        table.add_row(Text.assemble(Text("* " if p.required else "  ", style=ru.STYLE_REQUIRED_SHORT), _names(p)),
                      _help(p, ctx, markup_mode))
    console.print(Panel(table, border_style=ru.STYLE_OPTIONS_PANEL_BORDER, title=name, title_align=ru.ALIGN_OPTIONS_PANEL))


def install() -> None:
    ru._print_options_panel = _options_panel


def print_table(console: Console, title: str, columns: dict[str, bool], rows: list[list[str]]) -> None:
    """A table whose columns marked False (names, paths, numbers) are never wrapped or cut: when
    they do not fit the console's width beside the others' longest words, each row is printed as
    a block of `column: value` lines instead, so that a name is never shortened to `zoo:prox…`."""
    names = list(columns)
    need = 1 + sum(3 + max(len(w) for cell in [name, *(r[i] for r in rows)] for w in (cell.split() if columns[name] else [cell]))
                   for i, name in enumerate(names))
    if need <= console.width:
        t = Table(title=title)
        for name, wraps in columns.items():
            t.add_column(name, no_wrap=not wraps)
        for r in rows:
            t.add_row(*r)
        console.print(t)
        return
    console.print(title, soft_wrap=True)
    for r in rows:
        console.print(r[0], soft_wrap=True, highlight=False)
        for name, value in zip(names[1:], r[1:]):
            if value:
                console.print(f"  {name}: {value}", soft_wrap=True, highlight=False)
