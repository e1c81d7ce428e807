"""The docs as a reader gets them: the site builds with `mkdocs build --strict` (a broken link, a
missing anchor or a page left out of the nav fails), and the README's links lead to files."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_site_builds_strict(tmp_path):
    """Without --quiet: mkdocs's --quiet drops the warnings that --strict counts, and passes."""
    mkdocs = Path(sys.executable).with_name("mkdocs")
    p = subprocess.run([str(mkdocs), "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path / "site")],
                       capture_output=True, text=True, env={"NO_MKDOCS_2_WARNING": "1", "PATH": ""})
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "site" / "commands" / "search" / "index.html").is_file()


def test_readme_links_lead_to_files():
    text = (ROOT / "README.md").read_text()
    links = [l for l in re.findall(r"\]\(([^)#\s]+)", text) if "://" not in l]
    assert links
    assert [l for l in links if not (ROOT / l).exists()] == []


def test_every_command_has_a_page():
    import typer.main

    from nasctl.cli import app

    pages = {p.stem for p in (ROOT / "docs" / "commands").glob("*.md")}
    for name in typer.main.get_command(app).commands:
        assert name in pages or (name == "predict" and "fit-predictor" in pages), name
