"""The `nasctl` command line: a thin typer layer over the library.

Exit codes: 0 ok; 1 the job failed (or some archs ended as error, disturbed or throttled rows, or
an output could not be written, a full disk, after other work was written and kept); 2 bad input,
nothing written (also a training run that diverged: it writes no model, and an output that could
not be written before anything was); 3 device unreachable; 4 a search
whose --verify found the device disturbed until --verify-wait ran out (the result is kept, marked
unverified); 130 interrupted (Ctrl-C). With --json, stdout carries one strict JSON object (null, never NaN) and
nothing else; progress and logs go to stderr.

Bad input is refused at this boundary, before any work: every number option declares its range,
every output is checked (not a folder, not under a file, never one of the command's inputs), and
every file is checked on load (`nasctl.validate`, the space and predictor schemas).
"""

from __future__ import annotations

import copy
import errno
import math
import os
import re
import sys
import threading
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional, get_args

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

try:  # recent typer vendors click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
except ImportError:  # pragma: no cover - older typer on real click
    from click.exceptions import ClickException, NoArgsIsHelpError

from nasctl import __version__
from nasctl.errors import NasctlError, UserError
from nasctl.search import ALL_METHODS
from nasctl.tables import forget_written, output_error, to_json
from nasctl.terminal import examples, install as install_help, print_table
from nasctl.validate import MAX_MEMBERS, OPSETS, input_path, output_path, require_suffix

app = typer.Typer(
    name="nasctl",
    help="Hardware-aware NAS from real device measurements.",
    epilog=examples("nasctl info zoo:mobilenetv2", "nasctl devices", "nasctl search --help"),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, soft_wrap=True)  # a log line is one line, however wide: never folded mid-sentence
install_help()


class Stratify(str, Enum):
    none = "none"
    macs = "macs"
    params = "params"


JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or logs on stderr.")]
DataOpt = Annotated[str, typer.Option(help="digits | fashion-mnist | fashion-mnist:PATH | mnist:PATH | cifar10:PATH | "
                                           "imagefolder:PATH (never downloaded).")]
TrainLimitOpt = Annotated[Optional[int], typer.Option(min=10, max=100_000_000, help="Train on this many images only: a "
                                                      "class-balanced subset drawn with seed 0, for CPU budgets.")]
# Every number is declared with its range: typer refuses a value outside it, and a float with
# both bounds refuses nan and the infinities too (tests/test_bad_input.py checks each option).
Resolution = Annotated[Optional[int], typer.Option(min=8, max=4096, help="Input resolution (default: the space's).")]
WidthMult = Annotated[Optional[float], typer.Option(min=0.05, max=8.0, help="Width multiplier (default: the space's).")]
NumClasses = Annotated[Optional[int], typer.Option(min=1, max=100_000, help="Classes (default: the space's).")]
Seed = Annotated[int, typer.Option(min=0, max=2**32 - 1, help="Random seed; the same seed gives the same result.")]
PriorOpt = Annotated[Optional[list[Path]], typer.Option("--prior", help="A device already measured, as a predictor (.pt) or its rows (.parquet/.csv) "
                                                  "of the same space; repeat it for several.")]
Macro = Annotated[Optional[str], typer.Option(help="Macro-architecture, e.g. imagenet or cifar.")]
# Help panels: a command's own options stay in the first one ("Options"), the rest are grouped.
METHOD, SPACE_DATA, TRAINING, VERIFY = "Method", "Space and data", "Training", "Verify on a device"
BOARDS, NEW_DEVICE, EVOLUTION = "Boards (SSH, adb)", "A new device from few rows", "Evolution"
GUIDED = "Predictor-guided (--method predictor)"


def in_panel(option, panel: str):
    """One of the shared options above, shown in a command's help panel."""
    kind, info = get_args(option)
    info = copy.copy(info)
    info.rich_help_panel = panel
    return Annotated[kind, info]


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
    print(to_json(payload) if as_json else human)


@app.command(epilog=examples(
    "nasctl sample --n 300 --seed 0 -o runs/demo/archs.parquet",
    "nasctl sample --n 1000 --stratify macs -o archs.parquet",
    "nasctl sample --space fbnet --macro imagenet --n 50 -o fbnet.csv",
))
def sample(
    output: Annotated[Path, typer.Option("--output", "-o", help="Arch file to write (.parquet or .csv).")],
    space: Annotated[str, typer.Option(help="Built-in space name or a space .toml file.")] = "proxyless",
    n: Annotated[int, typer.Option("--n", min=1, max=1_000_000, help="How many distinct archs.")] = 100,
    seed: Seed = 0,
    stratify: Annotated[Stratify, typer.Option(help="Spread this cost evenly from smallest to largest.")] = Stratify.none,
    resolution: Resolution = None,
    width_mult: WidthMult = None,
    num_classes: NumClasses = None,
    macro: Macro = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """Draw distinct architectures from a search space."""
    from nasctl.models.cost import archs_frame, cost_table
    from nasctl.space import load_space
    from nasctl.space.sample import sample as draw
    from nasctl.tables import table_format, write_table

    table_format(output)
    output_path(output, inputs=(space,))
    sp = load_space(space, resolution=resolution, width_mult=width_mult, num_classes=num_classes, macro=macro)
    spread = None if stratify is Stratify.none else getattr(cost_table(sp), stratify.value)
    df = archs_frame(sp, draw(sp, n, seed, spread))
    write_table(df, output)
    summary = {
        "output": str(output), "space": sp.name, "n": len(df), "seed": seed, "stratify": stratify.value,
        "macs_min": int(df.macs.min()), "macs_max": int(df.macs.max()),
        "params_min": int(df.params.min()), "params_max": int(df.params.max()),
    }
    _emit(as_json, summary, f"wrote {len(df)} {sp.name} archs to {output} "
          f"(MMACs {df.macs.min() / 1e6:.0f}-{df.macs.max() / 1e6:.0f}, "
          f"params {df.params.min() / 1e6:.2f}M-{df.params.max() / 1e6:.2f}M)")


@app.command(epilog=examples(
    "nasctl info",
    "nasctl info zoo:mobilenetv2",
    "nasctl info runs/quickstart/search/arch.json --json",
))
def info(
    arch: Annotated[Optional[str], typer.Argument(help="An arch string, an arch.json (or its folder), or zoo:NAME. "
                                                  "Without it: the zoo of published nets.")] = None,
    space: Annotated[Optional[str], typer.Option(help="Space of an arch string (default proxyless), or another space "
                                                 "for a zoo net or arch.json.")] = None,
    resolution: Resolution = None,
    width_mult: WidthMult = None,
    num_classes: NumClasses = None,
    macro: Macro = None,
    as_json: JsonOpt = False,
):
    """Params, MACs, per-layer costs and the canonical string of an arch; or the zoo's nets."""
    from nasctl.models import arch_info
    from nasctl.space.archfile import read_arch_ref
    from nasctl.space.zoo import PREFIX, is_zoo, zoo_entry, zoo_names
    from nasctl.tabular import lookup

    params = dict(resolution=resolution, width_mult=width_mult, num_classes=num_classes, macro=macro)
    if arch is None:
        nets = []
        for name in zoo_names():
            d = arch_info(read_arch_ref(PREFIX + name, space, **params))
            nets.append({"name": PREFIX + name, "space": d["space"], "params": d["params"], "macs": d["macs"],
                         "published": zoo_entry(name)["published"]})
        if as_json:
            _emit(True, {"zoo": nets}, "")
            return
        rows = []
        for n in nets:
            p = n["published"]
            rows.append([n["name"], f"{n['params']:,}", f"{n['macs']:,}",
                         f"{p['params']:,} / {p['macs']:,}" if "macs" in p else f"{p['params']:,} / -",
                         "yes" if p.get("rounded") else ""])
        print_table(Console(), "the zoo of published nets", {"zoo net": False, "params": False, "MACs": False,
                    "published params / MACs": True, "rounded": False}, rows)
        return
    a = read_arch_ref(arch, space, **params)
    d = arch_info(a)
    if tables := lookup(a):
        d["tabular"] = tables
    if is_zoo(arch):
        entry = zoo_entry(arch)
        d.update(zoo=arch, paper=entry["paper"], published=entry["published"])
    if as_json:
        _emit(True, d, "")
        return
    t = Table("layer", "op", "MACs", "params")
    t.add_row("fixed", "stem, fixed blocks, head", f"{d['fixed']['macs']:,}", f"{d['fixed']['params']:,}")
    for l in d["layers"]:
        if l["macs"] or l["params"]:
            t.add_row(str(l["layer"]), l["op"], f"{l['macs']:,}", f"{l['params']:,}")
    out = Console(soft_wrap=True)  # the arch string stays one line, to copy and paste
    out.print(t)
    p = d["space_params"]
    out.print(f"{d['arch']}" + (f" (key {d['key']})" if "key" in d else "") + f"\n{d['space']} ({p['macro']}, {p['resolution']}x{p['resolution']}, width {p['width_mult']:g}, "
              f"{p['num_classes']} classes): {d['params']:,} params, {d['macs']:,} MACs")
    if "published" in d:
        pub = d["published"]
        out.print(f"published: {pub['params']:,} params" + (f", {pub['macs']:,} MACs" if "macs" in pub else "") + f" ({pub['source']})")
    for name, row in d.get("tabular", {}).items():
        if "top1" in row:
            out.print(f"{name}: top-1 {row['top1']:.2%} ± {row['top1_std']:.2%} over {row['trainings']} trainings; "
                      f"its params {row['params']:,}, its FLOPs {row['flops']:,} (multiply-adds counted once, as MACs here)")
        else:
            out.print(f"{name}: " + ", ".join(f"{k.removesuffix('_ms')} {v:.4g} ms" for k, v in row.items() if k.endswith("_ms")))


@app.command(epilog=examples(
    "nasctl profile --device local --archs archs.parquet -o latency.parquet",
    "nasctl profile --device rpi4 --host pi@10.0.0.7 --archs a.parquet -o pi.parquet",
    "nasctl profile --device xavier --check",
))
def profile(
    device: Annotated[str, typer.Option(help="Device profile name (see profiles/) or a .toml file.")],
    archs: Annotated[Optional[Path], typer.Option(help="Arch file from `nasctl sample` (or any table with an 'arch' column).")] = None,
    arch: Annotated[Optional[str], typer.Option(help="One arch instead: an arch string, or an arch.json (search/retrain output).")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Row store (.parquet or .csv); reruns resume it. Required, except with --check.")] = None,
    host: Annotated[Optional[list[str]], typer.Option(rich_help_panel=BOARDS, help="SSH: [user@]address[:port], overriding the profile; "
                                                     "repeat it to shard the archs over several boards of one kind.")] = None,
    serial: Annotated[Optional[list[str]], typer.Option(rich_help_panel=BOARDS, help="adb: device serial (see `adb devices`); repeat it for several phones.")] = None,
    check: Annotated[bool, typer.Option("--check", help="Connect, start the agent, print the device facts; measure nothing.")] = False,
    trust_new_host_key: Annotated[bool, typer.Option(rich_help_panel=BOARDS, help="SSH: accept and save an unknown host key (never a changed one).")] = False,
    space: Annotated[Optional[str], typer.Option(rich_help_panel=SPACE_DATA, help="Space (default: the arch file's 'space' column).")] = None,
    resolution: in_panel(Resolution, SPACE_DATA) = None,
    width_mult: in_panel(WidthMult, SPACE_DATA) = None,
    num_classes: in_panel(NumClasses, SPACE_DATA) = None,
    macro: in_panel(Macro, SPACE_DATA) = None,
    retry_errors: Annotated[bool, typer.Option(help="Measure again the archs stored as error, disturbed or throttled rows.")] = False,
    budget: Annotated[Optional[int], typer.Option(rich_help_panel=NEW_DEVICE, min=1, max=1_000_000, help="Measure only this many archs of --archs, the most "
                                                  "informative under --prior (a new device); rerun for the next round.")] = None,
    prior: in_panel(PriorOpt, NEW_DEVICE) = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """Measure archs on a device; rows are stored as they arrive, and a rerun skips them."""
    from nasctl.device import load_device
    from nasctl.profile import Store, check_device, profile_archs
    from nasctl.space.archfile import read_arch_ref, read_archs
    from nasctl.tables import table_format

    dev = load_device(device)
    hosts = dev.targets(host, serial)
    note = (lambda text: None) if quiet else (lambda text: err.print(f"[yellow]{text}[/]"))
    if check:
        facts = [check_device(dev, h, trust_new_host_key, note) for h in hosts]
        _emit(as_json, {"device": dev.name, "hosts": facts}, "\n".join(_facts_text(dev.name, f) for f in facts))
        return
    if (archs is None) == (arch is None) or output is None:
        raise UserError("profile needs --archs or --arch (one of them) and --output (or --check)")
    if (budget is not None or prior) and archs is None:
        raise UserError("--budget and --prior choose from a pool: give it as --archs")
    if prior and budget is None:
        raise UserError("--prior says what to measure under --budget: give --budget N")
    table_format(output)
    input_path(archs, "--archs")
    for p in prior or ():
        input_path(p, "--prior")
    output_path(output, inputs=(archs, arch, device, space, *(prior or ())))
    store = Store(output)
    params = dict(resolution=resolution, width_mult=width_mult, num_classes=num_classes, macro=macro)
    if arch is not None:
        one = read_arch_ref(arch, space, **params)
        sp, arch_list = one.space, [one]
    else:
        sp, arch_list = read_archs(archs, space, **params)
    if budget is not None:
        from nasctl.predict.priors import load_prior
        from nasctl.profile.rounds import budget_round

        priors = tuple(load_prior(p, sp, "latency_ms") for p in prior or ())
        arch_list, info = budget_round(store, dev.name, sp, arch_list, budget, priors)
        if not quiet:
            err.print(f"round {info['round']} ({'resumed' if info['resumed'] else 'chosen'}): {len(arch_list)} archs "
                      f"of {archs}" + (f" under {len(priors)} prior device(s)" if priors else ""))
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
        progress.start()

    def on_row(row: dict):
        if row["status"] == "error" and not quiet:
            err.print(f"[red]error[/] {row['arch_id']}: {row['error']}")
        elif row["status"] == "disturbed" and not quiet:
            err.print(f"[yellow]disturbed[/] {row['arch_id']}: other cores {row['other_cores_busy']:.0%} busy while timing")
        elif row["status"] == "throttled" and not quiet:
            err.print(f"[yellow]throttled[/] {row['arch_id']}: {row['throttle_reason']}")
        progress.advance(task)

    try:
        s = profile_archs(arch_list, sp, dev, store, hosts=hosts, trust_new_host_key=trust_new_host_key,
                          retry_errors=retry_errors, on_start=on_start, on_row=on_row, on_note=note)
    finally:
        progress.stop()
    _emit(as_json, s.to_dict(),
          f"{s.measured} measured ({s.disturbed} disturbed, {s.throttled} throttled), {s.errors} errors, {s.skipped} skipped -> {s.output} "
          f"({s.wall_s:.1f} s, overhead {100 * (s.overhead or 0):.0f}%"
          + (f", {s.reconnects} reconnects" if s.reconnects else "") + ")")
    if s.errors or s.disturbed or s.throttled:
        raise typer.Exit(1)


def _facts_text(name: str, f: dict) -> str:
    if f.get("agent_version") == "command":
        return f"{name} @ {f.get('host')}: a {f.get('cpu_model')}, run once per arch"
    energy = f.get("energy_source") or "none"
    if energy == "none" and f.get("energy_note"):
        energy += f" ({f['energy_note']})"
    lines = [f"{name} @ {f.get('host')}: {f.get('cpu_model')} ({f.get('cpu_count')} cores, {f.get('machine')}), {f.get('os')}",
             f"  runtime {f.get('runtime')} {f.get('runtime_version') or '(not installed)'}, python {f.get('python')}, "
             f"governor {f.get('governor')}, {f.get('temp_c')} C",
             f"  energy source: {energy}"]
    if f.get("power_mode") is not None:
        lines.append(f"  power mode: {f['power_mode']}, clocks locked: {f.get('clocks_locked')}")
    return "\n".join(lines)


@app.command("fit-predictor", epilog=examples(
    "nasctl fit-predictor latency.parquet --metric latency_ms -o cpu.pt",
    "nasctl fit-predictor pi.parquet --prior xavier.pt --prior cpu.pt -o pi.pt",
))
def fit_predictor_cmd(
    rows: Annotated[Path, typer.Argument(help="Measured rows (.parquet/.csv), e.g. from `nasctl profile`.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Predictor file (.pt); a .json report and a .png scatter go beside it.")],
    metric: Annotated[str, typer.Option(help="Column to learn, e.g. latency_ms, energy_mj, pixel2_ms.")] = "latency_ms",
    space: Annotated[Optional[str], typer.Option(help="Space (default: the rows' 'space' column).")] = None,
    test: Annotated[float, typer.Option(min=0.05, max=0.5, help="Held-out share for the report.")] = 0.2,
    seed: Seed = 0,
    members: Annotated[int, typer.Option(min=1, max=MAX_MEMBERS, help="Ensemble members (their spread is the uncertainty).")] = 5,
    config_id: Annotated[Optional[str], typer.Option(help="Device config to fit, when the rows hold several.")] = None,
    prior: PriorOpt = None,
    drift_correct: Annotated[Optional[bool], typer.Option("--drift-correct/--no-drift-correct", help=(
        "Fit latency / drift: each row read at the device's base speed by its reference net's timing. "
        "Default: on where every row carries a drift."), show_default=False)] = None,
    allow_emulated: Annotated[bool, typer.Option("--allow-emulated", help=(
        "Fit rows timed under a CPU emulator (qemu) too: their latencies describe the emulator, not the board."))] = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """Learn a metric from measured rows; report it beside the additive lookup table (LUT).
    With --prior devices, a few rows (5 or more) fit a new device's table."""
    from nasctl.predict import FitConfig, fit_predictor, load_rows
    from nasctl.predict.predictor import MIN_ROWS
    from nasctl.predict.priors import load_prior
    from nasctl.predict.report import save_fit
    from nasctl.predict.transfer import MIN_PRIOR_ROWS

    input_path(rows, "ROWS")
    for p in prior or ():
        input_path(p, "--prior")
    require_suffix(output, (".pt",), "the predictor file")
    output_path(output, inputs=(rows, *(prior or ())), writes=(output.with_suffix(".json").name, output.with_suffix(".png").name))
    data = load_rows(rows, metric, space, config_id, MIN_PRIOR_ROWS if prior else MIN_ROWS, drift_correct, allow_emulated)
    priors = tuple(load_prior(p, data.space, metric) for p in prior or ())
    if not quiet:
        err.print(f"fitting {metric} on {len(data.y)} rows ({data.skipped_errors} error rows skipped)"
                  + (f" with {len(priors)} prior device(s)" if priors else "")
                  + (f", drift-corrected (drift {data.drift['drift_min']:.3f}-{data.drift['drift_max']:.3f})" if data.drift else "")
                  + "...")
    pred, report, holdout = fit_predictor(data, metric, test, seed, FitConfig(seed=seed, members=members), priors)
    how = f"held-out {len(holdout[0])}" if report["test_rows"] else "leave-one-out on all"
    report = save_fit(output, pred, report, holdout, f"{metric} on {data.space.name}: {how} of {len(data.y)} rows")
    chosen = report["chosen"]
    if as_json:
        print(to_json(report))
        return
    t = Table(title=f"{metric}: {how} rows (default = {chosen})")
    for c in ("model", "RMSE", "MAPE", "Kendall tau", "Spearman rho", "within 5%", "within 10%"):
        t.add_column(c, justify="right")
    for name, f in report["test"].items():
        t.add_row(name, f"{f['rmse']:.4g}", f"{f['mape']:.2%}", f"{f['kendall_tau']:.3f}", f"{f['spearman_rho']:.3f}",
                  f"{f['within_5']:.1%}", f"{f['within_10']:.1%}")
    Console().print(t)
    if spread := report.get("seed_spread"):
        print(f"the rows' own seed spread ({spread['column']}): median {spread['median_std']:.4g}; a perfect predictor of the "
              f"expected {metric} would still score RMSE {spread['noise_rmse']:.4g} against their means")
    print(f"wrote {output}, {output.with_suffix('.json')}, {output.with_suffix('.png')}")


@app.command(epilog=examples(
    "nasctl predict cpu.pt archs.parquet -o predicted.parquet",
    "nasctl predict cpu.pt archs.parquet --json",
))
def predict(
    predictor: Annotated[Path, typer.Argument(help="Predictor file from `nasctl fit-predictor`.")],
    archs: Annotated[Optional[Path], typer.Argument(help="Arch file to predict for.")] = None,
    arch: Annotated[Optional[str], typer.Option(help="One arch string instead of a file.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the archs with predicted columns.")] = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """Predict a metric for archs (batched) or for one --arch, with the ensemble's std."""
    from nasctl.predict import Predictor
    from nasctl.tables import read_table, table_format, write_table

    if (archs is None) == (arch is None):
        raise UserError("give an arch file or --arch, not both or neither")
    input_path(predictor, "PREDICTOR")
    input_path(archs, "ARCHS")
    if output is not None:
        table_format(output)
        output_path(output, inputs=(predictor, archs))
    p = Predictor.load(predictor)
    space = p.space()
    m, unit = p.metric, p.meta["unit"]
    if arch is not None:
        mean, std = p.predict([space.parse(arch)])
        _emit(as_json, {"arch": arch, m: float(mean[0]), f"{m}_std": float(std[0]), "unit": unit},
              f"{mean[0]:.4g} ± {std[0]:.2g} {unit}")
        return
    df, summary = p.predict_table(read_table(archs), archs)
    if output is not None:
        write_table(df, output)
    summary["output"] = str(output) if output else None
    _emit(as_json, summary, f"{len(df)} archs: predicted {m} {summary['min']:.4g}-{summary['max']:.4g} {unit} "
          f"(median {summary['median']:.4g})" + (f" -> {output}" if output else ""))


Method = Enum("Method", {m.replace("-", "_"): m for m in ALL_METHODS}, type=str)  # the library's one list
Acquisition = Enum("Acquisition", {m: m for m in ("ei", "ucb", "thompson")}, type=str)


@app.command(epilog=examples(
    "nasctl tabular",
    "nasctl tabular nas-bench-macro -o nbm.parquet && nasctl fit-predictor nbm.parquet --metric top1 -o top1.pt",
    "nasctl tabular help-nb201 -o help.parquet && nasctl fit-predictor help.parquet --metric pixel3_ms -o pixel3.pt",
))
def tabular(
    name: Annotated[Optional[str], typer.Argument(help="A shipped table; without it, the list.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write its rows (.parquet or .csv).")] = None,
    as_json: JsonOpt = False,
):
    """The tabular benchmarks nasctl ships: every net's accuracy (trained to convergence) or its
    latency on real devices, as rows that fit-predictor, --prior and predict read."""
    from nasctl.tables import table_format, write_table
    from nasctl.tabular import TABLES, table, table_rows

    if name is None:
        if output is not None:
            raise UserError("--output writes one table's rows: name the table")
        listed = [{"name": n, "space": t.space, "kind": t.kind, "what": t.what} for n, t in TABLES.items()]
        if as_json:
            _emit(True, {"tables": listed}, "")
        else:
            print_table(Console(), "shipped tabular benchmarks", {"table": False, "space": False, "kind": False, "what": True},
                        [list(d.values()) for d in listed])
        return
    t = table(name)
    if output is not None:
        table_format(output)
        output_path(output)
    df = table_rows(name)
    if output is not None:
        write_table(df, output)
    metrics = ["top1"] if t.kind == "accuracy" else [c for c in df.columns if c.endswith("_ms")]
    summary = {"table": name, "space": t.space, "kind": t.kind, "rows": len(df), "output": str(output) if output else None,
               "metrics": {m: {"min": float(df[m].min()), "median": float(df[m].median()), "max": float(df[m].max())}
                           for m in metrics}}
    if "top1_std" in df:
        summary["top1_std_median"] = float(df["top1_std"].median())
    lines = [f"{name}: {len(df):,} {t.space} archs ({t.what})"]
    lines += [f"  {m}: {f['min']:.4g} - {f['max']:.4g} (median {f['median']:.4g})" for m, f in summary["metrics"].items()]
    if "top1_std_median" in summary:
        lines.append(f"  seed spread (top1_std): median {summary['top1_std_median']:.4g}")
    lines.append(f"wrote {output}" if output else "write its rows with -o FILE")
    _emit(as_json, summary, "\n".join(lines))


@app.command(epilog=examples(
    "nasctl search --predictor cpu.pt --target-ms 6 --data digits -o runs/s6",
    "nasctl search --predictor cpu.pt --target-ms 6 --verify local -o runs/s6",
    "nasctl search --method predictor --predictor xavier.pt --target-ms 24 \\\n"
    "  --trainer 'nasctl retrain {arch} --epochs 30 -o {dir}' --budget 50 -o pg",
))
def search(
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for arch.json, search.csv, search.png (and verify.parquet).")],
    predictor: Annotated[Optional[list[Path]], typer.Option(help="Predictor file(s) from fit-predictor: latency (ms) and/or energy (mJ). Required with --target-ms or --target-mj; repeat it for both "
                                                           "(--method predictor: for several devices too).")] = None,
    target_ms: Annotated[Optional[list[float]], typer.Option(min=1e-3, max=1e6, help="Latency target, with a latency predictor. --method predictor: "
                                                             "repeat it, in the order of the ms predictors, for one target per device.")] = None,
    target_mj: Annotated[Optional[list[float]], typer.Option(min=1e-3, max=1e9, help="Energy target, with an energy predictor (repeatable as --target-ms).")] = None,
    max_params: Annotated[Optional[str], typer.Option(help="Params budget, e.g. 2.5M (counted at the deployment config).")] = None,
    max_mflops: Annotated[Optional[str], typer.Option(help="Multiply-add budget in millions, e.g. 300.")] = None,
    method: Annotated[Method, typer.Option(rich_help_panel=METHOD, help="lightnas (learned λ, one search), singlepath (Single-Path NAS thresholds), la-darts (cell spaces) or a baseline.")] = Method.lightnas,
    lambda_: Annotated[Optional[float], typer.Option("--lambda", rich_help_panel=METHOD, min=0.0, max=1e3, help="Fixed λ of fbnet / proxyless (default 0.2) or "
                                                      "singlepath / la-darts (default: learned, as lightnas).")] = None,
    space: Annotated[str, typer.Option(rich_help_panel=SPACE_DATA, help="Built-in space name or a space .toml file.")] = "proxyless",
    data: in_panel(DataOpt, SPACE_DATA) = "digits",
    train_limit: in_panel(TrainLimitOpt, SPACE_DATA) = None,
    resolution: Annotated[Optional[int], typer.Option(rich_help_panel=SPACE_DATA, min=8, max=4096, help="Supernet input resolution (default: the data's).")] = None,
    width_mult: Annotated[float, typer.Option(rich_help_panel=SPACE_DATA, min=0.05, max=8.0, help="Supernet width; the arch string does not depend on it.")] = 0.5,
    epochs: Annotated[int, typer.Option(rich_help_panel=TRAINING, min=1, max=100_000, help="Epochs over the w half of the training data.")] = 30,
    warmup_epochs: Annotated[int, typer.Option(rich_help_panel=TRAINING, min=0, max=100_000, help="Epochs with α frozen at the start.")] = 3,
    batch: Annotated[int, typer.Option(rich_help_panel=TRAINING, min=2, max=65_536, help="Batch size per process.")] = 64,
    w_lr: Annotated[float, typer.Option(rich_help_panel=TRAINING, min=1e-8, max=10.0, help="SGD learning rate of the weights (cosine).")] = 0.05,
    alpha_lr: Annotated[float, typer.Option(rich_help_panel=TRAINING, min=0.0, max=10.0, help="Adam learning rate of α (paper: 1e-3 over ~180k steps).")] = 0.05,
    lambda_lr: Annotated[float, typer.Option(rich_help_panel=TRAINING, min=0.0, max=10.0, help="η_λ, the dual-ascent step of λ (paper: 5e-4).")] = 0.05,
    rho: Annotated[float, typer.Option(rich_help_panel=TRAINING, min=0.0, max=1e3, help="Augmented-Lagrangian damping of the targets; 0 = the paper's objective.")] = 4.0,
    tau0: Annotated[float, typer.Option(rich_help_panel=TRAINING, min=0.01, max=100.0, help="Initial Gumbel temperature.")] = 5.0,
    tau_min: Annotated[float, typer.Option(rich_help_panel=TRAINING, min=0.01, max=100.0, help="Final Gumbel temperature.")] = 0.2,
    verify: Annotated[Optional[str], typer.Option(rich_help_panel=VERIFY, help="Measure the result on this device profile (e.g. local, a name `nasctl devices` lists, or a .toml).")] = None,
    host: Annotated[Optional[str], typer.Option(rich_help_panel=VERIFY, help="--verify on an SSH/adb device: address or serial.")] = None,
    tolerance: Annotated[float, typer.Option(rich_help_panel=VERIFY, min=1e-9, max=1.0, help="Allowed relative gap between measured and target.")] = 0.03,
    verify_wait: Annotated[float, typer.Option(rich_help_panel=VERIFY, min=0.0, max=86_400.0, help="Seconds a disturbed --verify waits in all for a quiet device "
                                               "(pauses of 5, 10, 20 ... s) before the result is kept unverified (exit 4).")] = 300.0,
    calibrate: Annotated[bool, typer.Option(rich_help_panel=VERIFY, help="If --verify misses, shift the predictor by the residual and search on.")] = True,
    calibrate_budget: Annotated[bool, typer.Option(rich_help_panel=METHOD, help="la-darts: search --max-params/--max-mflops at the budget DCA-NAS's "
                                                   "lookup graph maps it to (made by short searches once, then stored).")] = False,
    candidates: Annotated[int, typer.Option(rich_help_panel=METHOD, min=1, max=10_000, help="random: archs to train.")] = 5,
    population: Annotated[int, typer.Option(rich_help_panel=METHOD, min=2, max=10_000, help="evolution: population size.")] = 24,
    generations: Annotated[int, typer.Option(rich_help_panel=METHOD, min=1, max=10_000, help="evolution: generations.")] = 10,
    trainer: Annotated[Optional[str], typer.Option(rich_help_panel=GUIDED, help="predictor: the command that trains one arch, with {arch} "
                                                   "(and {dir}, {key}, {slot}); it prints top1=<fraction> or writes {dir}/metrics.csv. "
                                                   "Default: nasctl retrain with --data and --epochs.")] = None,
    budget: Annotated[Optional[int], typer.Option(rich_help_panel=GUIDED, min=1, max=100_000, help="predictor: trainer runs in all, the initial design included.")] = None,
    initial: Annotated[int, typer.Option(rich_help_panel=GUIDED, min=1, max=10_000, help="predictor: nets of the initial design, spread over MACs.")] = 5,
    jobs: Annotated[int, typer.Option(rich_help_panel=GUIDED, min=1, max=1024, help="predictor: trainer runs at once ({slot} says which: pin a GPU with it).")] = 1,
    acquisition: Annotated[Acquisition, typer.Option(rich_help_panel=GUIDED, help="predictor: expected improvement, upper confidence bound or Thompson draws.")] = Acquisition.ei,
    accuracy: Annotated[Optional[Path], typer.Option(rich_help_panel=GUIDED, help="predictor: a top-1 predictor (fit-predictor --metric top1) to pick "
                                                     "from instead of training (no --trainer, no --budget).")] = None,
    amp: Annotated[bool, typer.Option(rich_help_panel=TRAINING, help="bf16 autocast on CUDA.")] = True,
    seed: Annotated[int, typer.Option(rich_help_panel=TRAINING, min=0, max=2**32 - 1, help="Seed of the split, the init and the Gumbel draws.")] = 0,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """Search an arch that meets a latency/energy target (LightNAS: one search), or a budget."""
    from nasctl.search import Job, SearchConfig, run_search
    from nasctl.search.run import SEARCH_FILES, Events
    from nasctl.train.loop import rank

    if method.value == "predictor":
        return _guided(output, predictor, target_ms, target_mj, max_params, max_mflops, space, data, train_limit, epochs, trainer,
                       budget, initial, jobs, acquisition.value, accuracy, verify, host, verify_wait, seed, as_json, quiet)
    given = [f for f, v in (("--trainer", trainer), ("--budget", budget), ("--accuracy", accuracy)) if v is not None]
    if given or jobs != 1 or initial != 5 or acquisition.value != "ei":
        raise UserError(f"{', '.join(given) or '--jobs / --initial / --acquisition'}: for --method predictor only")
    if len(target_ms or ()) > 1 or len(target_mj or ()) > 1:
        raise UserError("one --target-ms and one --target-mj per search; several devices at once: --method predictor or supernet search")
    target_ms, target_mj = (target_ms or [None])[0], (target_mj or [None])[0]
    output_path(output, folder=True, inputs=(*(predictor or ()), space), writes=SEARCH_FILES)
    cfg = SearchConfig(method=method.value, epochs=epochs, warmup_epochs=warmup_epochs, batch=batch, w_lr=w_lr,
                       alpha_lr=alpha_lr, lambda_lr=lambda_lr, rho=rho, fixed_lambda=lambda_, tau0=tau0,
                       tau_min=tau_min, amp=amp, seed=seed)
    job = Job(space=space, data=data, train_limit=train_limit, predictors=tuple(str(p) for p in predictor or ()), target_ms=target_ms,
              target_mj=target_mj, max_params=max_params, max_mflops=max_mflops, width_mult=width_mult,
              resolution=resolution, verify=verify, host=host, tolerance=tolerance, verify_wait_s=verify_wait, calibrate=calibrate,
              calibrate_budget=calibrate_budget, candidates=candidates, population=population, generations=generations)
    lead = rank() == 0
    progress = Progress(TextColumn("[bold]search[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=err, disable=quiet or not lead)
    total = {"random": candidates, "evolution": generations}.get(method.value, epochs)
    task = progress.add_task(method.value, total=total, start=False)
    try:
        def on_epoch(row: dict):
            figs = ", ".join(f"{k.removeprefix('argmax_')} {v:.4g}" for k, v in row.items()
                             if k.startswith("argmax_") or k in ("latency_ms", "energy_mj") and "argmax_latency_ms" not in row)
            lam = ", ".join(f"λ {v:+.3f}" for k, v in row.items() if k.startswith("lambda_") and cfg.learned_lambda)
            acc = row.get("epoch_val_acc", row.get("val_acc"))
            task_total = max(progress.tasks[0].total or 0, progress.tasks[0].completed + 1)
            progress.update(task, advance=1, total=task_total,
                            description=f"{method.value}: {figs}{', ' + lam if lam else ''}, val acc {acc:.1%}")

        note = (lambda t: None) if quiet or not lead else (lambda t: err.print(f"[yellow]{t}[/]"))
        summary = run_search(job, cfg, output, Events(on_epoch, note, start=lambda: (progress.start(), progress.start_task(task))))
    finally:
        progress.stop()
    if not lead:
        return
    lines = [f"{summary['method']}: {summary['arch']} -> {output / 'arch.json'} ({summary['wall_s']:.0f} s)"]
    for t in summary["targets"]:
        lines.append(f"  {t['metric']}: predicted {t['predicted']:.4g} ± {t['predicted_std']:.2g} {t['unit']} "
                     f"against {t['kind']} {t['target']:g}" + (f", λ {t['lambda']:+.3f}" if method.value == "lightnas" else ""))
    for i, r in enumerate(summary["verify"]):
        lines.append(f"  verify {i + 1} on {r['device']}: " + ", ".join(
            f"{k} measured {r['measured'][k]:.4g} (predicted {r['predicted'][k]:.4g}, {r['gap'][k]:+.1%} from target)" for k in r["measured"])
            + (" ok" if r["met"] else " MISSED"))
        if len(r.get("tried", [])) > 1:
            gaps = "; ".join(", ".join(f"{g:+.1%}" for g in x["gap"].values()) for x in r["tried"])
            lines.append(f"    {len(r['tried'])} nets measured ({gaps} from target): the pick meets, else is the nearest")
    if summary["verify_status"] == "unverified":
        lines.append(f"  UNVERIFIED: {summary['unverified_reason']} (arch.json keeps the result, marked)")
    _emit(as_json, summary, "\n".join(lines))
    if summary["verify_status"] == "unverified":
        raise typer.Exit(4)
    if summary["verify"] and not summary["verify"][-1]["met"]:
        raise typer.Exit(1)


def _guided(output, predictor, target_ms, target_mj, max_params, max_mflops, space, data, train_limit, epochs, trainer, budget,
            initial, jobs, acquisition, accuracy, verify, host, verify_wait, seed, as_json, quiet) -> None:
    """`search --method predictor` (nasctl.guided): train through --trainer, or pick from --accuracy."""
    from nasctl.guided.search import FILES, Events, GuidedJob, run

    output_path(output, folder=True, inputs=(*(predictor or ()), space, accuracy), writes=FILES)
    for p in (*(predictor or ()), accuracy):
        input_path(p, "--predictor" if p != accuracy else "--accuracy")
    job = GuidedJob(space=space, predictors=tuple(str(p) for p in predictor or ()), target_ms=tuple(target_ms or ()),
                    target_mj=tuple(target_mj or ()), max_params=max_params, max_mflops=max_mflops,
                    accuracy=str(accuracy) if accuracy else None, trainer=trainer, data=data, epochs=epochs, train_limit=train_limit,
                    budget=budget, initial=initial, jobs=jobs, rule=acquisition, verify=verify, host=host, verify_wait_s=verify_wait, seed=seed)
    note = (lambda t: None) if quiet else (lambda t: err.print(f"[yellow]{t}[/]"))
    result = (lambda r: None) if quiet else (lambda r: err.print(
        f"{r['n']}/{budget}: {r['arch_id']} " + (f"top-1 {r['top1']:.2%}" if r["status"] == "ok" else f"[red]error[/] {r['error']}")
        + (f" (predicted {r['predicted_top1']:.2%} ± {r['predicted_std']:.2%})" if r.get("predicted_top1") is not None else f" ({r['phase']})")
        + (f", best {r['best_top1']:.2%}" if r.get("best_top1") is not None else "")))
    doc = run(job, output, Events(result, note))
    if doc["arch"] is None:
        _emit(as_json, doc, f"no trained net meets every target ({doc['trained_ok']} of {doc['trained']} runs gave a top-1) -> {output / 'arch.json'}")
        raise typer.Exit(1)
    top1 = f"top-1 {doc['top1_measured']:.2%} trained" if doc["top1_measured"] is not None else f"top-1 {doc['top1_predicted']:.2%} predicted"
    lines = [f"predictor: {doc['arch']} -> {output / 'arch.json'} ({top1}; {doc['trained']} trainer runs, "
             f"{doc['device_measurements']} device measurements, {doc['wall_s']:.0f} s)"]
    for t in doc["targets"]:
        lines.append(f"  {(t['device'] + ' ') if t['device'] else ''}{t['metric']}: predicted {t['predicted']:.4g} {t['unit']} "
                     f"(+{t['margin']:.2g} margin)" + (f", measured {t['measured']:.4g}" if t["measured"] is not None else "")
                     + f" against {t['target']:g}" + ("" if t["met"] else " MISSED"))
    _emit(as_json, doc, "\n".join(lines))
    if not all(t["met"] for t in doc["targets"]):
        raise typer.Exit(1)


@app.command(epilog=examples(
    "nasctl retrain runs/s6/arch.json --data digits --epochs 30 -o runs/net",
    "nasctl retrain --resume runs/net",
    "torchrun --nproc-per-node 8 -m nasctl retrain arch.json -o runs/net",
))
def retrain(
    arch: Annotated[Optional[str], typer.Argument(help="arch.json (from search), a folder holding one, or an arch string.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Run folder: checkpoint.pt, metrics.csv, model.pt, arch.json.")] = None,
    data: in_panel(DataOpt, SPACE_DATA) = "digits",
    train_limit: in_panel(TrainLimitOpt, SPACE_DATA) = None,
    space: Annotated[Optional[str], typer.Option(rich_help_panel=SPACE_DATA, help="Space of an arch string (default proxyless).")] = None,
    macro: in_panel(Macro, SPACE_DATA) = None,
    width_mult: Annotated[Optional[float], typer.Option(rich_help_panel=SPACE_DATA, min=0.05, max=8.0, help="Channel width (default: the arch.json's, "
                                                        "else 1.0); the arch string does not depend on it.")] = None,
    epochs: Annotated[int, typer.Option(rich_help_panel=TRAINING, min=1, max=100_000, help="Epochs.")] = 30,
    batch: Annotated[int, typer.Option(rich_help_panel=TRAINING, min=2, max=65_536, help="Batch size per process.")] = 64,
    lr: Annotated[float, typer.Option(rich_help_panel=TRAINING, min=1e-8, max=10.0, help="Peak SGD learning rate (cosine after warm-up).")] = 0.1,
    weight_decay: Annotated[float, typer.Option(rich_help_panel=TRAINING, min=0.0, max=1.0, help="Weight decay (not on BN or biases).")] = 4e-5,
    warmup_epochs: Annotated[float, typer.Option(rich_help_panel=TRAINING, min=0.0, max=100_000.0, help="Linear warm-up, in epochs.")] = 1.0,
    label_smoothing: Annotated[float, typer.Option(rich_help_panel=TRAINING, min=0.0, max=0.99, help="Label smoothing.")] = 0.1,
    dropout: Annotated[float, typer.Option(rich_help_panel=TRAINING, min=0.0, max=0.99, help="Dropout before the classifier.")] = 0.2,
    ema: Annotated[float, typer.Option(rich_help_panel=TRAINING, min=0.0, max=0.99999, help="EMA decay of the weights (e.g. 0.9998); 0 = off.")] = 0.0,
    amp: Annotated[bool, typer.Option(rich_help_panel=TRAINING, help="Mixed precision (CUDA only).")] = True,
    seed: Annotated[int, typer.Option(rich_help_panel=TRAINING, min=0, max=2**32 - 1, help="Seed of the init, the data order and dropout.")] = 0,
    eval_every: Annotated[int, typer.Option(rich_help_panel=TRAINING, min=1, max=100_000, help="Score top-1 every N epochs (and after the last).")] = 1,
    resume: Annotated[Optional[Path], typer.Option(help="Continue the run in this folder exactly where it stopped.")] = None,
    from_supernet: Annotated[Optional[Path], typer.Option(help="Fine-tune: start from the arch's weights inherited from this "
                                                          "`nasctl supernet train` folder (BN recalibrated), not a fresh init.")] = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """Train an architecture from scratch (SGD, cosine, label smoothing), or fine-tune a supernet's subnet; resumable, torchrun-ready."""
    from nasctl.space.archfile import arch_file
    from nasctl.train.loop import rank
    from nasctl.train.retrain import RUN_FILES, Recipe, new_run, resume_run, retrain as train

    if resume is not None:
        run = resume_run(input_path(resume, "--resume", folder=True))
    elif arch is None or output is None:
        raise UserError("give an arch and -o OUTPUT (or --resume RUN_DIR)")
    else:
        output_path(output, folder=True, inputs=(arch_file(arch), space, from_supernet), writes=RUN_FILES)
        recipe = Recipe(epochs=epochs, batch=batch, lr=lr, weight_decay=weight_decay, warmup_epochs=warmup_epochs,
                        label_smoothing=label_smoothing, dropout=dropout, ema=ema, amp=amp, seed=seed, eval_every=eval_every)
        init = None
        if from_supernet is not None:
            from nasctl.ofa.score import inherited_init

            init = inherited_init(input_path(from_supernet, "--from-supernet", folder=True))
        run = new_run(arch, data, output, recipe, space, macro, train_limit, width_mult, init,
                      str(from_supernet) if from_supernet else None)
    lead = rank() == 0  # under torchrun only rank 0 writes and talks
    progress = Progress(TextColumn("[bold]retrain[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=err, disable=quiet or not lead)
    name = f"{run.arch.id} on {run.data.name}"
    with progress:
        task = progress.add_task(name, total=run.recipe.epochs)

        def on_epoch(row):
            progress.update(task, completed=row["epoch"], description=f"{name}: top-1 {row['top1']:.1%}, loss {row['train_loss']:.3f}")

        summary = train(run.arch, run.data, run.recipe, run.out, resume=run.resume, on_epoch=on_epoch, init=run.init, record=run.record)
    if lead:
        _emit(as_json, summary, f"{summary['epochs']} epochs -> {run.out}: top-1 {summary.get('top1', float('nan')):.2%}, "
              f"top-5 {summary.get('top5', float('nan')):.2%}")


@app.command(epilog=examples(
    "nasctl export runs/net --format onnx -o net.onnx",
    "nasctl export runs/net --format tflite -o net.tflite",
    "nasctl export runs/net --format trt --device xavier -o net.engine",
))
def export(
    model: Annotated[Path, typer.Argument(help="Run folder of `nasctl retrain` (model.pt + arch.json).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Artifact to write; a .json sidecar goes beside it.")],
    format: Annotated[str, typer.Option("--format", help="onnx | tflite | trt.")] = "onnx",
    opset: Annotated[int, typer.Option(min=OPSETS[0], max=OPSETS[1], help="ONNX opset (the TorchScript exporter's range).")] = 17,
    batch: Annotated[int, typer.Option(min=1, max=4096, help="Batch size of the exported input.")] = 1,
    dynamic_batch: Annotated[bool, typer.Option(help="ONNX: leave the batch dimension dynamic.")] = False,
    device: Annotated[Optional[str], typer.Option(help="trt: build the engine on this device (e.g. xavier).")] = None,
    host: Annotated[Optional[str], typer.Option(help="trt --device: SSH [user@]address[:port], overriding the profile.")] = None,
    trust_new_host_key: Annotated[bool, typer.Option(help="SSH: accept and save an unknown host key (never a changed one).")] = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """Export a trained model and check it against torch (parity is printed and stored)."""
    from nasctl.export import SUFFIXES, export_model, sidecar_path

    input_path(model, "MODEL", folder=True)
    if format in SUFFIXES:
        require_suffix(output, SUFFIXES[format], f"--format {format} writes a file that")
        output_path(output, inputs=(model / "model.pt", model / "arch.json"), writes=(sidecar_path(output).name,))
    info = export_model(model, format, output, opset=opset, batch=batch, dynamic_batch=dynamic_batch,
                        device=device, host=host, trust_new_host_key=trust_new_host_key)
    if "parity_max_abs_diff" in info:
        human = f"wrote {output} ({format}); parity max abs diff {info['parity_max_abs_diff']:.2e}"
    else:
        human = (f"wrote {output} (TensorRT {info.get('tensorrt_version')}, {info.get('gpu')}, "
                 f"built on {info.get('built_on') or 'this host'})")
    _emit(as_json, info, human)


@app.command(epilog=examples(
    "nasctl report runs/quickstart",
    "nasctl report runs/quickstart -o /tmp/quickstart.html",
))
def report(
    run: Annotated[Path, typer.Argument(help="Run folder (e.g. runs/quickstart): rows, predictors, searches, retrains.")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="HTML file (default RUN/report.html).")] = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """Write one self-contained HTML page of what a run produced (figures inlined)."""
    from nasctl.report import build_report

    input_path(run, "RUN", folder=True)
    if output is not None:
        require_suffix(output, (".html",), "the report")
        output_path(output)
    r = build_report(run, output)
    _emit(as_json, r, f"wrote {r['output']} ({len(r['sections'])} sections)")


@app.command(epilog=examples(
    "nasctl devices",
    "nasctl devices --check --timeout 10",
))
def devices(
    check: Annotated[bool, typer.Option("--check", help="Connect to each (in parallel) and start its agent.")] = False,
    timeout: Annotated[float, typer.Option(min=0.1, max=3600.0, help="Seconds to wait for each device with --check.")] = 20.0,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """List the device profiles; with --check, whether each is reachable (exit 3 if any is not)."""
    from nasctl.profile import survey_devices

    found = survey_devices(check, timeout)
    cols = {"name": False, "also": False, "transport": False, "runtime": False, "file": False,
            **({"reachable": False, "detail": True} if check else {"description": True})}
    rows = [[d["name"], ", ".join(d.get("aliases", ())), d.get("transport", "?"), d.get("runtime", "?"), d["file"],
             *(["yes" if d.get("reachable") else "no", _reached(d) if d.get("reachable") else d.get("error", "")] if check
               else [d.get("description", d.get("error", ""))])] for d in found]
    if as_json:
        print(to_json({"devices": found}))
    else:
        print_table(Console(), "device profiles", cols, rows)
    if check and not all(d.get("reachable") for d in found):
        raise typer.Exit(3)


def _reached(d: dict) -> str:
    """What a reached board is: its CPU, architecture, Python and runtime (and why its timings
    would mean nothing, when an emulator runs it)."""
    text = f"{d.get('cpu_model')} ({d.get('machine')}), Python {d.get('python')}, {d.get('runtime')} {d.get('runtime_version')}"
    return text + (f"; EMULATED: {d['emulated']}" if d.get("emulated") else "")


def _numbers(text: str, option: str, kind: type = int) -> tuple:
    """A comma-separated list option: 2,1,1,1 (or, with kind=float, positive numbers like 6,9.5)."""
    try:
        got = tuple(kind(v) for v in text.split(","))
    except ValueError:
        got = ()
    if not got or (kind is float and not all(0 < v < math.inf for v in got)):
        what = "whole numbers" if kind is int else "positive numbers"
        raise UserError(f"{option} takes {what} separated by commas, not {text!r}")
    return got


supernet_app = typer.Typer(help="Once-for-All: one elastic supernet, trained once; subnets with inherited weights.",
                           no_args_is_help=True, epilog=examples(
                               "nasctl supernet train --data digits --epochs 2,1,1,1 -o runs/ofa",
                               "nasctl supernet eval runs/ofa --n 500 -o acc.parquet",
                               "nasctl supernet search --help"))
app.add_typer(supernet_app, name="supernet")


@supernet_app.command("train", epilog=examples(
    "nasctl supernet train --data digits --epochs 2,1,1,1 -o runs/ofa",
    "nasctl supernet train --resume runs/ofa",
))
def supernet_train(
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Folder: supernet.json, checkpoint.pt, metrics.csv, supernet.pt.")] = None,
    space: Annotated[str, typer.Option(rich_help_panel=SPACE_DATA, help="A layered space (its MBConv kernels and expansions, and skip, become elastic).")] = "proxyless",
    data: in_panel(DataOpt, SPACE_DATA) = "digits",
    train_limit: in_panel(TrainLimitOpt, SPACE_DATA) = None,
    macro: in_panel(Macro, SPACE_DATA) = None,
    width_mult: in_panel(WidthMult, SPACE_DATA) = None,
    epochs: Annotated[str, typer.Option(rich_help_panel=TRAINING, help="Epochs of each phase: full,kernel,depth,expand (OFA's progressive shrinking).")] = "4,2,2,2",
    batch: Annotated[int, typer.Option(rich_help_panel=TRAINING, min=2, max=65_536, help="Batch size per process.")] = 64,
    lr: Annotated[float, typer.Option(rich_help_panel=TRAINING, min=1e-8, max=10.0, help="Peak SGD learning rate of the full net (cosine).")] = 0.05,
    shrink_lr: Annotated[float, typer.Option(rich_help_panel=TRAINING, min=1e-8, max=10.0, help="Peak learning rate of each shrinking phase.")] = 0.02,
    random: Annotated[int, typer.Option(rich_help_panel=TRAINING, min=0, max=64, help="Random subnets per step beside the largest and smallest (sandwich rule).")] = 2,
    resolutions: Annotated[Optional[str], typer.Option(rich_help_panel=SPACE_DATA, help="Per-batch input resolutions, e.g. 24,28,32 (default: the data's).")] = None,
    holdout: Annotated[int, typer.Option(rich_help_panel=SPACE_DATA, min=1, max=100_000_000, help="Training images kept apart to score subnets on.")] = 2000,
    naive: Annotated[bool, typer.Option(rich_help_panel=TRAINING, help="Ablation: no progressive shrinking; every epoch trains subnets drawn from the "
                                        "whole space, as many epochs in all.")] = False,
    seed: in_panel(Seed, TRAINING) = 0,
    resume: Annotated[Optional[Path], typer.Option(help="Continue the training in this folder exactly where it stopped.")] = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """Train an elastic supernet by progressive shrinking; resumable, torchrun-ready."""
    from nasctl.data import load_data
    from nasctl.ofa.elastic import new_supernet
    from nasctl.ofa.shrink import FILES, Shrink, read_record, record, train_supernet
    from nasctl.space.space import load_space
    from nasctl.train.loop import rank

    if resume is not None:
        out = input_path(resume, "--resume", folder=True)
        if not (out / "checkpoint.pt").is_file():
            raise UserError(f"--resume {out}: no checkpoint.pt to resume from")
        sp, doc, shrink = read_record(out)
        d = load_data(doc["data"], train_limit=doc["train_limit"])
    elif output is None:
        raise UserError("give -o OUTPUT (or --resume FOLDER)")
    else:
        out = output_path(output, folder=True, writes=FILES)
        shrink = Shrink(epochs=_numbers(epochs, "--epochs"), batch=batch, lr=lr, shrink_lr=shrink_lr, random=random,
                        resolutions=_numbers(resolutions, "--resolutions") if resolutions else (), holdout=holdout, seed=seed,
                        naive=naive)
        d = load_data(data, train_limit=train_limit)
        sp = load_space(space)
        if not hasattr(sp, "layers"):
            raise UserError(f"--space {space}: Once-for-All needs a layered space, not a cell space")
        if macro is None and d.resolution <= 64 and "cifar" in sp.macros:
            macro = "cifar"  # small images: fewer stride-2 steps, as retrain does
        sp = sp.with_params(macro=macro, resolution=d.resolution, num_classes=d.num_classes, width_mult=width_mult)
        new_supernet(sp)  # a space Once-for-All cannot make elastic is refused before anything is written
        if rank() == 0:
            out.mkdir(parents=True, exist_ok=True)
            record(sp, data, train_limit, shrink, out)
    lead = rank() == 0
    progress = Progress(TextColumn("[bold]supernet[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=err, disable=quiet or not lead)
    with progress:
        per_epoch = None
        task = progress.add_task("", total=None)

        def on_step(row):
            nonlocal per_epoch
            if per_epoch is None:
                per_epoch = row["steps"]
                progress.update(task, total=per_epoch * sum(shrink.epochs))
            progress.update(task, completed=(row["epoch"] - 1) * per_epoch + row["step"],
                            description=f"{row['phase']} (epoch {row['epoch']} of {sum(shrink.epochs)})")

        summary = train_supernet(sp, d, shrink, out, resume=resume is not None, on_step=on_step)
    if lead:
        _emit(as_json, summary, f"{summary['epochs']} epochs -> {out}: largest subnet's loss {summary.get('largest_loss', float('nan')):.3f}")


@supernet_app.command("eval", epilog=examples(
    "nasctl supernet eval runs/ofa --n 500 -o acc.parquet",
))
def supernet_eval(
    supernet: Annotated[Path, typer.Argument(help="Folder of `nasctl supernet train`.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Rows (.parquet/.csv): arch, top1, ... for `fit-predictor --metric top1`.")],
    n: Annotated[int, typer.Option("--n", min=1, max=1_000_000, help="Subnets to score (the largest and smallest first).")] = 100,
    seed: Seed = 0,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """Score inherited subnets (BN recalibrated) on the supernet's held-out training images."""
    from nasctl.ofa.score import score_subnets
    from nasctl.ofa.shrink import load_supernet
    from nasctl.tables import write_table

    require_suffix(output, (".parquet", ".csv"), "rows")
    output_path(output, inputs=(supernet,))
    trained = load_supernet(input_path(supernet, "SUPERNET", folder=True))
    progress = Progress(TextColumn("[bold]supernet eval[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("eta"), TimeRemainingColumn(), console=err, disable=quiet)
    with progress:
        task = progress.add_task("", total=n)
        rows = score_subnets(trained, n, seed, on_row=lambda i: progress.update(task, completed=i))
    write_table(rows, output)
    _emit(as_json, {"output": str(output), "rows": len(rows), "top1_min": float(rows["top1"].min()),
                    "top1_max": float(rows["top1"].max()), "eval_s": float(rows["eval_s"].sum())},
          f"{len(rows)} subnets -> {output}: top-1 {rows['top1'].min():.1%}..{rows['top1'].max():.1%} (held-out training images)")


@supernet_app.command("extract", epilog=examples(
    "nasctl supernet extract runs/ofa --arch arch.json -o runs/ofa-net",
))
def supernet_extract(
    supernet: Annotated[Path, typer.Argument(help="Folder of `nasctl supernet train`.")],
    arch: Annotated[str, typer.Option(help="The subnet: an arch string of the supernet's space, or an arch.json.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder: model.pt and arch.json, as `nasctl export` takes them.")],
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """Cut a subnet out of the supernet with its inherited weights (BN recalibrated): no retrain."""
    from nasctl.ofa.score import extract
    from nasctl.ofa.shrink import load_supernet

    output_path(output, folder=True, inputs=(supernet,), writes=("model.pt", "arch.json"))
    summary = extract(load_supernet(input_path(supernet, "SUPERNET", folder=True)), arch, output)
    _emit(as_json, summary, f"{summary['arch_id']} -> {output}: top-1 {summary['top1_heldout']:.2%} on held-out training images")


def _per_device(given: list[str] | None, option: str, kind=None) -> dict:
    """['6,9', 'cpu2=4,5'] -> {'': (6, 9), 'cpu2': (4, 5)}: "" is every device. Values are
    positive numbers, or with `kind` taken as they are (a device profile)."""
    out: dict = {}
    for text in given or ():
        name, sep, value = text.partition("=") if kind else text.rpartition("=")
        name, value = (name, value) if sep else ("", text)
        if name in out:
            raise UserError(f"{option}: {'every device' if not name else name} is given twice")
        out[name] = kind(value) if kind else _numbers(value, option, float)
    return out


@supernet_app.command("search", epilog=examples(
    "nasctl supernet search runs/ofa --accuracy acc.pt --predictor cpu.pt \\\n  --target-ms 6,9 -o runs/deploy",
))
def supernet_search(
    supernet: Annotated[Path, typer.Argument(help="Folder of `nasctl supernet train`.")],
    accuracy: Annotated[Path, typer.Option(help="Top-1 predictor fitted on `nasctl supernet eval` rows (--metric top1).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder: <device>-<target>/ (arch.json, model.pt), pareto-<device>.png, ofa.json, ofa.csv.")],
    predictor: Annotated[list[Path], typer.Option(help="A device's latency (ms) or energy (mJ) predictor; repeat for more devices. "
                                                   "Its file stem names the device's folders.")],
    target_ms: Annotated[Optional[list[str]], typer.Option(help="Latency targets: 6,9,12 for every ms predictor, or "
                                                           "cpu2=4,6 for one (repeat the option).")] = None,
    target_mj: Annotated[Optional[list[str]], typer.Option(help="Energy targets, as --target-ms.")] = None,
    max_params: Annotated[Optional[str], typer.Option(help="Params budget for every pair, e.g. 2.5M (counted at the device's config).")] = None,
    max_mflops: Annotated[Optional[str], typer.Option(help="Multiply-add budget in millions for every pair.")] = None,
    population: Annotated[int, typer.Option(rich_help_panel=EVOLUTION, min=2, max=100_000, help="Living population of the regularized evolution.")] = 100,
    generations: Annotated[int, typer.Option(rich_help_panel=EVOLUTION, min=1, max=100_000, help="Generations per (device, target).")] = 40,
    verify: Annotated[Optional[list[str]], typer.Option(rich_help_panel=VERIFY, help="Measure the chosen nets on a device profile: local for every device, or "
                                                        "cpu2=cpu-2t.toml for one (repeat the option).")] = None,
    host: Annotated[Optional[str], typer.Option(rich_help_panel=VERIFY, help="--verify on an SSH/adb device: address or serial.")] = None,
    tolerance: Annotated[float, typer.Option(rich_help_panel=VERIFY, min=1e-9, max=1.0, help="Allowed relative gap between measured and target.")] = 0.03,
    verify_wait: Annotated[float, typer.Option(rich_help_panel=VERIFY, min=0.0, max=86_400.0, help="Seconds a disturbed --verify waits in all for a quiet device.")] = 300.0,
    calibrate: Annotated[bool, typer.Option(rich_help_panel=VERIFY, help="If --verify misses, shift that predictor by the residual and evolve again, once.")] = True,
    seed: in_panel(Seed, EVOLUTION) = 0,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """Once-for-All's search: a net for every (device, target), in seconds each, weights inherited."""
    from nasctl.ofa.deploy import FILES, Deploy, deploy
    from nasctl.ofa.evolve import Evolution
    from nasctl.search.run import Events

    output_path(output, folder=True, inputs=(supernet, accuracy, *predictor), writes=FILES)
    d = Deploy(accuracy=str(input_path(accuracy, "--accuracy")), predictors=tuple(str(input_path(p, "--predictor")) for p in predictor),
               targets={"ms": _per_device(target_ms, "--target-ms"), "mJ": _per_device(target_mj, "--target-mj")},
               max_params=max_params, max_mflops=max_mflops,
               verify=_per_device(verify, "--verify", str), host=host, tolerance=tolerance, verify_wait_s=verify_wait, calibrate=calibrate,
               evolution=Evolution(population=population, generations=generations, seed=seed))
    note = (lambda t: None) if quiet else (lambda t: err.print(f"[yellow]{t}[/]"))
    on_pair = (lambda r: None) if quiet else (lambda r: err.print(
        f"{r['pair']}: {r['arch_id']} predicted {r['predicted']:.4g} {r['unit']}, top-1 {r['predicted_top1']:.1%} predicted, "
        f"{r['top1_heldout']:.1%} inherited ({r['search_s']:.1f} s search, {r['extract_s']:.1f} s weights)"))
    doc = deploy(input_path(supernet, "SUPERNET", folder=True), d, output, Events(on_pair, note))
    lines = [f"{len(doc['results'])} nets -> {output} ({doc['wall_s']:.0f} s)"]
    for r in doc["results"]:
        got = f", measured {r['measured']:.4g} ({r['gap']:+.1%}){'' if r['met'] else ' MISSED'}" if "measured" in r else ""
        lines.append(f"  {r['pair']}: {r['arch_id']} predicted {r['predicted']:.4g} {r['unit']}{got}, inherited top-1 {r['top1_heldout']:.1%}")
    _emit(as_json, doc, "\n".join(lines))
    if any(r["verify_status"].startswith("unverified") for r in doc["results"]):
        raise typer.Exit(4)
    if any(r.get("met") is False for r in doc["results"]):
        raise typer.Exit(1)


def _no_empty(args: list[str]) -> None:
    """No nasctl option or argument takes an empty value: a path "" would be the current folder
    (typer makes it "."), a name "" matches nothing. Checked on the raw words, before parsing."""
    for i, a in enumerate(args):
        if not a.strip() or (a.startswith("--") and a.endswith("=")):
            name = a.rstrip("=") if a.strip() else (args[i - 1] if i and args[i - 1].startswith("-") else "an argument")
            raise UserError(f"{name}: must not be empty")


def _one_line(text: str) -> str:
    """An error as one readable line: a value pasted 10 kB long is cut, not echoed whole."""
    first = text.splitlines()[0] if text else ""
    return re.sub(r"\S{201,}", lambda m: f"{m[0][:100]}...({len(m[0])} characters)", first)


def _not_finite(e: ClickException, args: list[str]) -> str | None:
    """Say "not a finite number" for nan or inf, where the range check would say "greater than"."""
    opts = getattr(getattr(e, "param", None), "opts", None) or []
    for i, a in enumerate(args):
        name, _, value = a.partition("=")
        if name in opts:
            value = value or (args[i + 1] if i + 1 < len(args) else "")
            try:
                if not math.isfinite(float(value)):
                    lo, hi = e.param.min, e.param.max
                    return f"Invalid value for '{name}': {value} is not a finite number" + (f" ({lo:g} to {hi:g})" if lo is not None and hi is not None else "")
            except ValueError:
                return None
    return None


def run(args: list[str] | None = None) -> int:
    """Run the CLI as a user does; every error becomes one line on stderr and its exit code."""
    args = sys.argv[1:] if args is None else list(args)
    forget_written()  # an OutputError's exit code says whether this command kept work before it
    try:
        _no_empty(args)
        code = typer.main.get_command(app).main(args, prog_name="nasctl", standalone_mode=False)
    except NoArgsIsHelpError as e:
        e.show()
        code = 2
    except ClickException as e:  # usage errors: missing or malformed options
        print(f"nasctl: error: {_one_line(_not_finite(e, args) or e.format_message())}", file=sys.stderr)
        code = e.exit_code
    except NasctlError as e:
        print(f"nasctl: error: {_one_line(str(e))}", file=sys.stderr)
        code = e.exit_code
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise  # anything but a full disk outside nasctl's writers is a bug: keep its traceback
        full = output_error(Path(e.filename or "."), e)
        print(f"nasctl: error: {_one_line(str(full))}", file=sys.stderr)
        code = full.exit_code
    except (KeyboardInterrupt, typer.Abort):
        code = 130
    if code == 130:  # typer turns Ctrl-C into a silent exit code 130; a script's log should say why
        print("nasctl: interrupted", file=sys.stderr)
    return code if isinstance(code, int) else 0


def main() -> None:
    """Console-script entry."""
    code = run()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 or threading.active_count() > 1:
        # Skip interpreter finalization while other threads still run: under torchrun it races
        # the process group's C++ threads and now and then aborts a rank that has finished its
        # work (seen under load: "terminate called without an active exception", SIGABRT, after
        # destroy_process_group), and `devices --check` may leave a probe thread in paramiko
        # (exit 134 seen with --timeout 0). Every file is already written atomically; only the
        # streams need flushing.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    main()
