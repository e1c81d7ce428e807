"""The `nasctl` command line: a thin typer layer over the library.

Exit codes: 0 ok; 1 the job failed (or some archs ended as error rows); 2 bad input, nothing
written; 3 device unreachable. With --json, stdout carries one JSON object and nothing else;
progress and logs go to stderr.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from nasctl import __version__
from nasctl.errors import NasctlError

app = typer.Typer(
    name="nasctl",
    help="Hardware-aware NAS from real device measurements.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)


class Stratify(str, Enum):
    none = "none"
    macs = "macs"
    params = "params"


JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or logs on stderr.")]
Resolution = Annotated[Optional[int], typer.Option(help="Input resolution (default: the space's).")]
WidthMult = Annotated[Optional[float], typer.Option(help="Width multiplier (default: the space's).")]
NumClasses = Annotated[Optional[int], typer.Option(help="Classes (default: the space's).")]
Macro = Annotated[Optional[str], typer.Option(help="Macro-architecture, e.g. imagenet or cifar.")]


def _version(value: bool):
    if value:
        print(f"nasctl {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")] = False,
):
    """Hardware-aware NAS from real device measurements."""


def _emit(as_json: bool, payload: dict, human: str) -> None:
    print(json.dumps(payload) if as_json else human)


@app.command()
def sample(
    output: Annotated[Path, typer.Option("--output", "-o", help="Arch file to write (.parquet or .csv).")],
    space: Annotated[str, typer.Option(help="Built-in space name or a space .toml file.")] = "proxyless",
    n: Annotated[int, typer.Option("--n", help="How many distinct archs.")] = 100,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same archs.")] = 0,
    stratify: Annotated[Stratify, typer.Option(help="Spread this cost evenly from smallest to largest.")] = Stratify.none,
    resolution: Resolution = None,
    width_mult: WidthMult = None,
    num_classes: NumClasses = None,
    macro: Macro = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """Draw distinct architectures from a search space."""
    from nasctl.space import load_space
    from nasctl.space.archfile import archs_frame
    from nasctl.space.sample import sample as draw
    from nasctl.tables import table_format, write_table

    table_format(output)
    sp = load_space(space, resolution=resolution, width_mult=width_mult, num_classes=num_classes, macro=macro)
    df = archs_frame(sp, draw(sp, n, seed, stratify.value))
    write_table(df, output)
    summary = {
        "output": str(output), "space": sp.name, "n": len(df), "seed": seed, "stratify": stratify.value,
        "macs_min": int(df.macs.min()), "macs_max": int(df.macs.max()),
        "params_min": int(df.params.min()), "params_max": int(df.params.max()),
    }
    _emit(as_json, summary, f"wrote {len(df)} {sp.name} archs to {output} "
          f"(MMACs {df.macs.min() / 1e6:.0f}-{df.macs.max() / 1e6:.0f}, "
          f"params {df.params.min() / 1e6:.2f}M-{df.params.max() / 1e6:.2f}M)")


@app.command()
def profile(
    device: Annotated[str, typer.Option(help="Device profile name (see profiles/) or a .toml file.")],
    archs: Annotated[Path, typer.Option(help="Arch file from `nasctl sample` (or any table with an 'arch' column).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Row store (.parquet or .csv); reruns resume it.")],
    space: Annotated[Optional[str], typer.Option(help="Space (default: the arch file's 'space' column).")] = None,
    resolution: Resolution = None,
    width_mult: WidthMult = None,
    num_classes: NumClasses = None,
    macro: Macro = None,
    retry_errors: Annotated[bool, typer.Option(help="Measure again the archs stored as error rows.")] = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """Measure archs on a device; rows are stored as they arrive, and a rerun skips them."""
    from nasctl.profile import Store, load_device, profile_archs
    from nasctl.space.archfile import read_archs

    dev = load_device(device)
    store = Store(output)
    sp, arch_list = read_archs(archs, space, resolution=resolution, width_mult=width_mult,
                               num_classes=num_classes, macro=macro)
    progress = Progress(
        TextColumn("[bold]profile[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
        console=err, disable=quiet, transient=False,
    )
    task = None

    def on_start(todo: int, skipped: int):
        nonlocal task
        if skipped and not quiet:
            err.print(f"{skipped} archs already in {output} for this device config; skipping them")
        task = progress.add_task(dev.name, total=todo)

    def on_row(row: dict):
        if row["status"] != "ok" and not quiet:
            err.print(f"[red]error[/] {row['arch_id']}: {row['error']}")
        progress.advance(task)

    with progress:
        s = profile_archs(arch_list, sp, dev, store, retry_errors=retry_errors, on_start=on_start, on_row=on_row)
    _emit(as_json, s.to_dict(),
          f"{s.measured} measured, {s.errors} errors, {s.skipped} skipped -> {s.output} "
          f"({s.wall_s:.1f} s, overhead {100 * (s.overhead or 0):.0f}%)")
    if s.errors:
        raise typer.Exit(1)


def main() -> None:
    """Console-script entry: library errors become one line on stderr and their exit code."""
    try:
        app()
    except NasctlError as e:
        print(f"nasctl: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("nasctl: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
