"""Help and output as a user sees them at 80 columns in a pipe: every command's --help ends with
runnable examples, no line is wider than the terminal, a choice is never cut mid-word, required
options say so; names and arch strings are printed whole."""

import re

import pytest
import typer.main

from nasctl.cli import app, run

WIDTH = 80


def command_paths(cmd=None, path=()):
    cmd = cmd or typer.main.get_command(app)
    yield path
    for name, sub in getattr(cmd, "commands", {}).items():
        yield from command_paths(sub, (*path, name))


def params_of(path):
    cmd = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]
    return cmd.params


def output(capsys, monkeypatch, *args) -> str:
    monkeypatch.setenv("COLUMNS", str(WIDTH))
    monkeypatch.setenv("NO_COLOR", "1")
    assert run(list(args)) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("path", list(command_paths()), ids=lambda p: " ".join(p) or "nasctl")
def test_help_fits_80_columns_and_ends_with_examples(path, capsys, monkeypatch):
    text = output(capsys, monkeypatch, *path, "--help")
    lines = text.rstrip().splitlines()
    # each option's row in a panel: "│ * --output, -o PATH  Folder ..." (the star: required)
    marks = {m[2].rstrip(","): m[1] for m in (re.match(r"│ ([* ]) (\S+)", l) for l in lines) if m}
    assert max(map(len, lines)) <= WIDTH
    after = text.split("Examples:", 1)[1]
    examples = [l.strip() for l in after.splitlines() if re.match(r"\s*(nasctl|torchrun|bash) ", l)]
    assert 1 <= len(examples) <= 3, after
    for p in params_of(path):
        kind = getattr(p.type_descriptor.annotation, "__members__", None)
        for choice in (kind or {}).values():
            assert re.search(rf"\b{re.escape(choice.value)}\b", text), f"choice {choice.value} cut in {' '.join(path)} --help"
        first = p.opts[0] if p.opts and p.opts[0].startswith("-") else p.display_name_raw
        assert marks[first] == ("*" if p.required else " "), f"{first} in {' '.join(path)} --help"
    assert text.count("[required]") == sum(p.required for p in params_of(path))


def test_options_are_grouped_into_panels(capsys, monkeypatch):
    text = output(capsys, monkeypatch, "search", "--help")
    for panel in ("Options", "Method", "Space and data", "Training", "Verify on a device"):
        assert f"─ {panel} ─" in text
    method = text.split("─ Method ─")[1].split("╰")[0]
    assert "--method" in method and "--verify" not in method and "--output" not in method


def test_zoo_names_and_arch_strings_are_whole_at_80_columns(capsys, monkeypatch):
    text = output(capsys, monkeypatch, "info")
    assert "…" not in text
    for name in ("zoo:proxylessnas-mobile", "zoo:proxylessnas-gpu", "zoo:proxylessnas-cpu", "zoo:mobilenetv2"):
        assert name in text
    text = output(capsys, monkeypatch, "info", "zoo:proxylessnas-mobile")
    arch = output(capsys, monkeypatch, "info", "zoo:proxylessnas-mobile", "--json")
    assert re.search(r'"arch": "([^"]+)"', arch)[1] in text.splitlines()


def test_devices_lists_the_short_names(capsys, monkeypatch):
    text = output(capsys, monkeypatch, "devices")
    assert "…" not in text
    block = text.split("local-cpu", 1)[1]
    assert re.search(r"also: local\b", block) or re.search(r"│ local\s", block)
