"""The ``ferwild`` command line: a thin typer shell over the library's functions.

Heavy libraries (torch, pandas, matplotlib) are imported inside the commands so that
``ferwild --help`` answers quickly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer
from rich.rule import Rule
from rich.table import Table

from ferwild.cli_format import CONTEXT_SETTINGS, UNLIMITED_WIDTH, command_settings, count, output_console

app = typer.Typer(
    help="ferwild: facial expression recognition in the wild - prepare, train, study, audit, ship.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # classic click help (see ferwild.cli_format)
    context_settings=CONTEXT_SETTINGS,
)
# set again for each invocation (see _root): wrapped at a terminal's width, never when piped
console = output_console()
err_console = output_console(stderr=True)


def _package_version() -> str:
    """The installed distribution's version (its metadata), else ``ferwild.__version__``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ferwild")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree that is not installed
        import ferwild

        return ferwild.__version__


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"ferwild {_package_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True, expose_value=False,
                                 help="Print ferwild's version and exit."),
) -> None:
    """ferwild: facial expression recognition in the wild - prepare, train, study, audit, ship."""
    from ferwild.system import limit_threads_to_available_cpus

    global console, err_console
    # for this invocation's streams: a terminal's width there, no wrapping or cutting in a file or pipe
    console = output_console(width=ctx.terminal_width)
    err_console = output_console(stderr=True, width=ctx.terminal_width)

    # before torch is imported: its thread pools otherwise size themselves from the host's
    # CPU count, not from the quota/affinity this process runs under
    limit_threads_to_available_cpus()


def _show_command(command: str) -> None:
    """Print a command to rerun by hand on one line, never wrapped (a wrapped one breaks when pasted)."""
    console.print(command, soft_wrap=True, highlight=False, markup=False)


def _section(title: str) -> None:
    """A heading rule: the terminal's width, or 80 columns in a file or pipe (not a 100k-column line)."""
    console.print(Rule(title), width=80 if console.width >= UNLIMITED_WIDTH else None)


def _verbose_detail(verbose: bool) -> None:
    """With ``--verbose``, show on stderr the raw detail the library logs at DEBUG (PyAV's own
    error text for an undecodable video, ...); without it, only the plain message."""
    import logging

    logger = logging.getLogger("ferwild")
    for handler in [h for h in logger.handlers if getattr(h, "ferwild_cli", False)]:
        logger.removeHandler(handler)  # one per process, whatever an earlier invocation left
    logger.setLevel(logging.NOTSET)
    if not verbose:
        return

    class _ToStderr(logging.Handler):
        ferwild_cli = True

        def emit(self, record: logging.LogRecord) -> None:
            err_console.print(f"detail: {record.getMessage()}", highlight=False, markup=False)

    logger.addHandler(_ToStderr(logging.DEBUG))
    logger.setLevel(logging.DEBUG)


def _fail(message: str, code: int = 2) -> None:
    """Print a one-line error (no traceback: user mistakes are not crashes) and exit."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


@app.command(**command_settings())
def prepare(
    source: Path = typer.Argument(..., help="Image folder (class per folder, optional split folders), "
                                  "CSV/Parquet manifest, or FER2013's fer2013.csv."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder of the prepared dataset."),
    labels: Optional[str] = typer.Option(None, help="Label set: basic6 | basic7 | affectnet8 (default: basic7 "
                                         "for a FERPlus folder, FER2013's classes; else basic6)."),
    vote_rule: str = typer.Option("majority", help="Crowd votes (FER+, votes_* columns) -> hard label: majority "
                                  "(ties, unknown and not-a-face majorities excluded) | strict (FER+'s own: "
                                  "lone votes dropped, the top class needs over half)."),
    align: str = typer.Option("auto", help="auto | mtcnn | landmarks | none (pre-aligned crops)."),
    fallback: str = typer.Option("keep", help="When no face is found: keep (centre crop, flagged "
                                 "unaligned) | drop."),
    size: int = typer.Option(224, help="Side of aligned crops in the cache (pre-aligned small crops "
                             "keep their native size)."),
    margin: float = typer.Option(0.3, help="Margin around the 5-point template (fraction of the face)."),
    min_confidence: float = typer.Option(0.9, help="MTCNN face confidence threshold."),
    split: str = typer.Option("auto", help="auto (the source's own split if every row has one, else "
                              "ratios) | source | ratios."),
    split_ratios: str = typer.Option("0.7,0.2,0.1", help="train,val,test ratios."),
    seed: int = typer.Option(0, help="Seed of the split and the augmentation."),
    balance: str = typer.Option("max", help="Balance train by augmentation: max | none | COUNT."),
    near_dup_threshold: int = typer.Option(4, help="pHash Hamming distance for near-duplicate candidates."),
    near_dup_min_corr: float = typer.Option(0.95, help="Pixel correlation a candidate needs to count "
                                            "as a near duplicate."),
    drop_cross_split_dups: bool = typer.Option(False, help="Drop val/test rows that duplicate a row "
                                               "of an earlier split."),
    workers: int = typer.Option(0, help="Worker processes (0 = the available CPUs)."),
    chunk_size: int = typer.Option(0, help="Rows per cache chunk (0 = automatic)."),
    overwrite: bool = typer.Option(False, help="Discard an existing incompatible output folder."),
    unlabelled: bool = typer.Option(False, "--unlabelled", help="A batch without labels (e.g. production "
                                    "photos for `ferwild audit`): keep every face, all in split test."),
    like: Optional[Path] = typer.Option(None, "--like", help="Cut faces like this prepared dataset (its crop "
                                        "size, margin, landmark template, colour, detector threshold and "
                                        "labels; these replace --size/--margin/--min-confidence/--labels)."),
    ray_address: Optional[str] = typer.Option(None, help="Run the chunks as Ray tasks: local | auto | "
                                              "ray://HOST:10001 (OUT on storage every node sees)."),
) -> None:
    """Turn raw labelled faces into a clean, split, balanced, cached dataset (resumable)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ferwild.data.prepare import PrepareConfig, PrepareError
    from ferwild.data.prepare import prepare as run_prepare
    from ferwild.data.sources import SourceError, default_label_set
    from ferwild.data.split import parse_ratios
    from ferwild.parallel import RayUnavailable

    try:
        settings = dict(align=align, fallback=fallback, split=split, split_ratios=parse_ratios(split_ratios),
                        seed=seed, balance=balance, near_dup_threshold=near_dup_threshold,
                        near_dup_min_corr=near_dup_min_corr, drop_cross_split_dups=drop_cross_split_dups,
                        workers=workers, chunk_size=chunk_size, unlabelled=unlabelled, vote_rule=vote_rule)
        if like is not None:
            config = PrepareConfig.like(like, **settings)
        else:
            config = PrepareConfig(labels=labels or default_label_set(source), size=size, margin=margin,
                                   min_confidence=min_confidence, **settings)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    tasks: dict[str, int] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err_console, transient=False) as bar:
        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                label = {"cache": "load + align + cache (chunks)", "balance": "balance (images)"}
                tasks[stage] = bar.add_task(label.get(stage, stage), total=total)
            bar.update(tasks[stage], completed=done, total=total)

        try:
            result = run_prepare(source, out, config, overwrite=overwrite, progress=progress,
                                 ray_address=ray_address)
        except (PrepareError, SourceError, RayUnavailable) as exc:
            _fail(str(exc))
    print_prepare_summary(result.summary, result.out_dir)


@app.command(**command_settings())
def resplit(
    prepared: Path = typer.Argument(..., help="A folder written by `ferwild prepare`."),
    out: Path = typer.Option(..., "--out", "-o", help="The new prepared folder (shares the pixel cache)."),
    group_by: str = typer.Option("auto", help="auto (subject, else video, as prepare does) | none (by class "
                                               "only: the study's split, people cross splits) | a column."),
    split_ratios: str = typer.Option("0.7,0.2,0.1", help="train,val,test ratios."),
    seed: int = typer.Option(0, help="Seed of the split."),
    overwrite: bool = typer.Option(False, help="Replace an existing --out."),
) -> None:
    """Split a prepared dataset again (grouped or not) without detecting faces again."""
    from ferwild.data.resplit import ResplitError
    from ferwild.data.resplit import resplit as run_resplit
    from ferwild.data.split import parse_ratios

    try:
        result = run_resplit(prepared, out, group_by=group_by, ratios=parse_ratios(split_ratios), seed=seed,
                             overwrite=overwrite)
    except (ResplitError, ValueError) as exc:
        _fail(str(exc))
    table = Table(title=f"grouped by {result['group_by']}, seed {seed}")
    table.add_column("split")
    table.add_column("faces", justify="right")
    for split in ("train", "val", "test"):
        table.add_row(split, str(sum(result["counts"].get(split, {}).values())))
    console.print(table)
    console.print(f"people with photos in more than one split: {result['people_in_two_splits']}", highlight=False)


def print_prepare_summary(summary: dict, out_dir: Path) -> None:
    """Print the prepare summary as rich tables."""
    names = summary["label_names"]
    counts = summary["counts"]
    after = summary["counts_after_balance"]
    table = Table(title=f"Prepared {summary['usable']} of {summary['inputs']} inputs "
                        f"(align={summary['align_mode']}, cache {'x'.join(map(str, summary['cache_shape']))}, "
                        f"split={summary['split_mode']})")
    table.add_column("class")
    for split in ("train", "val", "test"):
        table.add_column(split, justify="right")
    table.add_column("train balanced", justify="right")
    table.add_column("align fail", justify="right")
    fail = summary["alignment_failure"]["per_class"]
    if summary["split_mode"] == "unlabelled":
        names = []  # no classes to count: the total row says it all
    for name in names:
        table.add_row(name, *[str(counts.get(s, {}).get(name, 0)) for s in ("train", "val", "test")],
                      str(after.get("train", {}).get(name, 0)),
                      f"{100 * fail[name]:.1f}%" if name in fail else "-")
    table.add_row("[b]total", *[f"[b]{sum(counts.get(s, {}).values())}" for s in ("train", "val", "test")],
                  f"[b]{sum(after.get('train', {}).values())}",
                  f"[b]{100 * summary['alignment_failure']['overall']:.1f}%")
    console.print(table)
    statuses = ", ".join(f"{k} {v}" for k, v in summary["status_counts"].items())
    console.print(f"status: {statuses}")
    for key in ("rejected_reasons", "excluded_reasons"):
        if summary[key]:
            console.print(f"{key.split('_')[0]}: " + ", ".join(f"{k} ({v})" for k, v in summary[key].items()),
                          highlight=False)
    d = summary["duplicates"]
    console.print(f"duplicates: {d['exact_pairs']} exact pairs, {d['near_pairs']} near pairs "
                  f"(pHash <= {d['threshold']} and pixel r >= {d['min_correlation']}, of "
                  f"{d['near_candidates']} candidates); across splits: {d['cross_split_exact']} exact, "
                  f"{d['cross_split_near']} near; dropped from val/test: {d['dropped_from_val_test']}")
    for warning in summary.get("quality_warnings", []):
        console.print(f"[bold yellow]warning:[/] {warning}", highlight=False)
    console.print(f"written to {out_dir}/ (manifest.parquet, summary.json, rejects.csv, "
                  f"duplicates.csv, class_counts.png, contact_sheet.png) in {summary['elapsed_s']:.1f}s",
                  highlight=False)


@app.command(**command_settings(allow_extra_args=False))
def train(
    args: Optional[list[str]] = typer.Argument(None, help="[CONFIG.yaml] then section.key=value overrides, "
                                               "e.g. optim.lr=1e-4 train.epochs=5."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory (config, metrics, checkpoints)."),
    data: Optional[Path] = typer.Option(None, help="Prepared dataset folder (data.path)."),
    model: Optional[str] = typer.Option(None, help="Model name (see `ferwild models`) or timm:<name>."),
    epochs: Optional[int] = typer.Option(None, help="train.epochs"),
    batch_size: Optional[int] = typer.Option(None, help="train.batch_size (global; accumulation makes it fit)."),
    micro_batch_size: Optional[int] = typer.Option(None, help="train.micro_batch_size (per step, per device)."),
    lr: Optional[float] = typer.Option(None, help="optim.lr"),
    optimizer: Optional[str] = typer.Option(None, help="optim.optimizer: adam | sgd | rmsprop | adamw"),
    image_size: Optional[int] = typer.Option(None, help="model.image_size (default: the model's)."),
    seed: Optional[int] = typer.Option(None, help="train.seed"),
    pretrained: Optional[str] = typer.Option(None, help="model.pretrained: none | hub | PATH"),
    device: Optional[str] = typer.Option(None, help="train.device: auto | cpu | cuda"),
    resume: bool = typer.Option(False, help="Continue the interrupted run in --out."),
) -> None:
    """Train a model on a prepared dataset (the study's recipe by default); resumable."""
    from ferwild.config import ConfigError, RunConfig
    from ferwild.runs import RunError
    from ferwild.train import TrainingDiverged, TrainingInterrupted, fit

    args = list(args or [])
    config_file = args.pop(0) if args and "=" not in args[0] else None
    flags = {"data.path": data, "model.name": model, "train.epochs": epochs, "train.batch_size": batch_size,
             "train.micro_batch_size": micro_batch_size, "optim.lr": lr, "optim.optimizer": optimizer,
             "model.image_size": image_size, "train.seed": seed, "model.pretrained": pretrained,
             "train.device": device}
    overrides = args + [f"{k}={v}" for k, v in flags.items() if v is not None]
    try:
        config = RunConfig.load(config_file, overrides)
        fit(config, out, resume=resume, log=lambda m: console.print(m, highlight=False))
    except (ConfigError, RunError) as exc:
        _fail(str(exc))
    except TrainingDiverged as exc:
        _fail(f"training diverged: {exc}; the last good checkpoint is in {out}/checkpoints", code=1)
    except TrainingInterrupted:
        raise typer.Exit(130) from None
    except _model_errors() as exc:
        _fail(str(exc))
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one line, not one per rank
        console.print(f"run written to {out}/ (config.yaml, metrics.csv, curves.png, checkpoints/)", highlight=False)


def _model_errors() -> tuple[type[Exception], ...]:
    from ferwild.models import PretrainedWeightsUnavailable, UnknownModelError

    return (PretrainedWeightsUnavailable, UnknownModelError)


@app.command(**command_settings())
def evaluate(
    run: Path = typer.Argument(..., help="A run directory written by `ferwild train` or a shipped model "
                               "(ferwild:fer2013_vgg)."),
    data: Path = typer.Option(..., help="Prepared dataset folder."),
    split: str = typer.Option("test", help="Split to evaluate."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default RUN/eval-SPLIT)."),
    checkpoint: str = typer.Option("best", help="best | last"),
    batch_size: int = typer.Option(256, help="Evaluation batch size."),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
) -> None:
    """Accuracy, macro-F1, per-class metrics, confusion matrix, calibration and predictions."""
    from ferwild.evaluate import evaluate_run
    from ferwild.runs import RunError

    try:
        summary = evaluate_run(run, data, split, out, which=checkpoint, batch_size=batch_size, device=device)
    except RunError as exc:
        _fail(str(exc))
    table = Table(title=f"{run} on {split} ({summary['n']} faces): accuracy {summary['accuracy']:.3f}, "
                        f"macro-F1 {summary['macro_f1']:.3f}, ECE {summary['ece']:.3f}")
    for col in ("class", "precision", "recall", "f1", "support"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for label, m in summary["per_class"].items():
        table.add_row(label, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", str(m["support"]))
    console.print(table)
    console.print(f"written to {summary['out_dir']}/", highlight=False)


@app.command(**command_settings())
def models() -> None:
    """List the model registry: input size, parameter count, pretrained weights."""
    from ferwild.models import list_models
    from ferwild.shipped import DEFAULT_MODEL, PREFIX, list_shipped

    table = Table(title="ferwild models (any timm model also works as timm:<name>)")
    for col in ("name", "input", "params", "pretrained weights", "description"):
        table.add_column(col)
    for entry in list_models():
        table.add_row(entry["name"], str(entry["input_size"]), f"{entry['params'] / 1e6:.2f}M",
                      entry["pretrained_source"], entry["description"])
    console.print(table)
    title = (f"trained models shipped with ferwild (use as --run NAME; {PREFIX}{DEFAULT_MODEL} is the default "
             "of predict and serve)")
    # the real-photo figure on the people no choice saw (wild_dev's report people), not on all
    # photos, which include the people TTA and framing were chosen on
    columns = ("architecture", "trained on", "test set", "test acc / macro-F1",
               "wild_dev report people (real photos no choice saw) acc / macro-F1", "size")

    def figures(values: dict) -> str:
        acc, f1 = values.get("accuracy"), values.get("macro_f1")
        if acc is None:
            return "-"
        return f"{100 * acc:.1f}% / " + ("-" if f1 is None else f"{100 * f1:.1f}%")

    def report(row: dict) -> str:
        text = figures(row["wild_report"])
        source = row.get("wild_report_source")
        return text if source in (None, row["name"]) else f"{text} (as {source}'s baseline)"

    rows = [(row["name"], row["model"], row["data"], row["test_name"], figures(row["test"]),
             report(row), f"{row['size_bytes'] / 1e6:.1f} MB") for row in list_shipped()]
    if console.width < 120:
        # too narrow for seven columns without cutting words: one block per model
        console.print(f"\n[b]{title}[/b]", highlight=False)
        for name, *values in rows:
            console.print(f"[b]{name}[/b]", highlight=False, soft_wrap=True)
            for col, value in zip(columns, values):
                console.print(f"  {col}: {value}", highlight=False)
        return
    shipped = Table(title=title)
    shipped.add_column("name", no_wrap=True)  # a name is what people copy: never folded or cut
    for col in columns:
        shipped.add_column(col)
    for values in rows:
        shipped.add_row(*values)
    console.print(shipped)


@app.command(**command_settings())
def synth(
    preset: str = typer.Option("reference", help="reference | production."),
    n: int = typer.Option(1000, "--n", help="Number of images."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (images + manifest.csv)."),
    seed: int = typer.Option(0, help="Random seed (same seed -> same files)."),
    size: int = typer.Option(112, help="Image side in pixels."),
    labels: str = typer.Option("basic7", help="basic6 | basic7."),
) -> None:
    """Draw procedural faces with known expressions, identities, attributes and landmarks."""
    from ferwild.data.synth import PRESETS, synth_dataset

    if preset not in PRESETS:
        _fail(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if n < 1:
        _fail("--n must be positive")
    try:
        manifest = synth_dataset(preset, n, out, seed=seed, size=size, label_set=labels)
    except ValueError as exc:
        _fail(str(exc))
    counts = manifest["label"].value_counts().to_dict()
    console.print(f"{len(manifest)} {preset} faces of {manifest['subject'].nunique()} subjects in "
                  f"{out}/ (manifest.csv): " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
                  highlight=False)


@app.command(**command_settings())
def study(
    spec: Path = typer.Argument(..., help="Study YAML (data, seeds, base, experiments)."),
    out: Path = typer.Option(..., "--out", "-o", help="Study folder (resumable with the same command)."),
    workers: int = typer.Option(0, help="Concurrent trials (0 = half the available CPUs)."),
    ray_address: Optional[str] = typer.Option(None, help="Run trials on Ray: auto | ray://HOST:PORT | local."),
    mlflow: bool = typer.Option(False, help="Also log every trial to MLflow."),
    mlflow_uri: str = typer.Option("./mlruns", help="MLflow tracking URI (with --mlflow)."),
    data: Optional[Path] = typer.Option(None, help="A prepared dataset to use instead of the file's `data:`."),
) -> None:
    """Run a study: experiments x grid x seeds, select on validation, write results and a report."""
    from ferwild.config import ConfigError
    from ferwild.runs import RunError
    from ferwild.study import StudyError, StudySpec, run_study

    try:
        spec_to_run = StudySpec.load(spec)
        if data is not None:
            spec_to_run.data = str(data.absolute())
        run_study(spec_to_run, out, workers=workers or None, ray_address=ray_address,
                  mlflow_uri=mlflow_uri if mlflow else None, log=lambda m: console.print(m, highlight=False))
    except (StudyError, ConfigError, RunError) as exc:
        _fail(str(exc))
    console.print(f"results: {out / 'results.csv'}; report: {out / 'report.html'}", highlight=False)


@app.command(**command_settings())
def report(study_dir: Path = typer.Argument(..., help="A folder written by `ferwild study`.")) -> None:
    """(Re)write a study's report.html and report.md."""
    from ferwild.study_report import write_report

    if not (study_dir / "results.csv").exists():
        _fail(f"{study_dir} has no results.csv (run `ferwild study` first)")
    html, md = write_report(study_dir)
    console.print(f"report: {html} and {md}", highlight=False)


class ProgressBars:
    """Rich progress bars keyed by a task name: ``update_task(name, done, total)``."""

    def __enter__(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=console, transient=False)
        self.console = self.bar.console
        self.tasks: dict[str, int] = {}
        self.bar.__enter__()
        return self

    def update_task(self, name: str, done: int, total: int) -> None:
        if name not in self.tasks:
            self.tasks[name] = self.bar.add_task(f"forward: {name}", total=total)
        self.bar.update(self.tasks[name], completed=done, total=total)

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)


def _split_list(value: Optional[str]) -> Optional[tuple[str, ...]]:
    if value is None or not value.strip():
        return None
    return tuple(v.strip() for v in value.split(",") if v.strip())


@app.command(**command_settings())
def audit(
    run: Path = typer.Option(..., "--run", help="A run directory written by `ferwild train`, a study (its best "
                             "run) or a shipped model (ferwild:fer2013_vgg)."),
    reference: Path = typer.Option(..., "--reference", help="The prepared dataset the run was trained on."),
    production: Path = typer.Option(..., "--production", help="Prepared production data (labelled, or "
                                    "prepared with --unlabelled)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: audit.json, report.html, report.md, figures/."),
    attributes: Optional[str] = typer.Option(None, help="Comma-separated attribute columns for the bias audit "
                                             "(default: every attr_* column), e.g. gender,occlusion."),
    alpha: float = typer.Option(0.05, help="Significance level of the tests."),
    reference_split: str = typer.Option("test", help="Reference split whose metrics production is compared with."),
    shift_split: str = typer.Option("val+test", help="Held-out reference rows for the shift tests."),
    permutations: int = typer.Option(1000, help="MMD permutations."),
    bootstrap: int = typer.Option(1000, help="Bootstrap resamples for confidence intervals."),
    min_group_size: int = typer.Option(30, help="Smaller groups are reported, not ranked."),
    seed: int = typer.Option(0, help="Seed of subsampling, permutations and bootstraps."),
    batch_size: int = typer.Option(256, help="Inference batch size."),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
) -> None:
    """Audit production data: performance drop, covariate and label shift, subgroup bias, advice."""
    from ferwild.audit.core import AuditConfig, run_audit
    from ferwild.runs import RunError

    try:
        config = AuditConfig(alpha=alpha, reference_split=reference_split, shift_split=shift_split,
                             n_permutations=permutations,
                             n_bootstrap=bootstrap, min_group_size=min_group_size, seed=seed,
                             attributes=_split_list(attributes), batch_size=batch_size, device=device)
        with ProgressBars() as bars:
            result = run_audit(run, reference, production, out, config,
                               progress=lambda m: bars.console.print(f"  {m}", highlight=False),
                               batch_progress=bars.update_task)
    except (RunError, ValueError) as exc:
        _fail(str(exc))
    cov = result["covariate_shift"]
    console.print(f"covariate shift: MMD p = {cov['mmd_p_value']:.4f}, domain AUC = {cov['domain_auc']:.3f}, "
                  f"combined p = {cov['p_value']:.2g}" if cov["p_value"] else "combined p < 1e-12"
                  f" -> {'DETECTED' if cov['detected'] else 'not detected'}", highlight=False)
    for line in result["verdict"]["findings"]:
        console.print(f"- {line}", highlight=False)
    console.print("[bold]advice[/]")
    for line in result["verdict"]["advice"]:
        console.print(f"- {line}", highlight=False)
    console.print(f"written to {out}/ (audit.json, report.html, report.md, figures/, production_scores.parquet)",
                  highlight=False)


@app.command(**command_settings())
def occlusion(
    run: str = typer.Option("ferwild:ferplus_vgg", "--run", help="A run directory, a study or a shipped model."),
    data: Path = typer.Option(..., "--data", help="A prepared dataset (labelled or --unlabelled) whose faces are "
                              "occluded."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: occlusion.json, occlusion.md, occlusion.png."),
    split: Optional[str] = typer.Option(None, help="Only this split's faces (default: every usable face)."),
    max_faces: Optional[int] = typer.Option(None, help="A seeded sample of at most this many faces."),
    detectors: str = typer.Option("mtcnn,fast", help="Detectors run on occluded photos (comma-separated; "
                                  "empty to skip)."),
    detector_photos: int = typer.Option(100, help="Occluded photos per detector and occluder."),
    bootstrap: int = typer.Option(1000, help="People-bootstrap resamples for the intervals."),
    seed: int = typer.Option(0, help="Seed of the sample, the random patches and the bootstrap."),
    batch_size: int = typer.Option(256, help="Inference batch size."),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
) -> None:
    """Occlusion probes: sunglasses, a mask, half a face, a hand and random patches drawn by the
    landmarks on every face's photo; accuracy drop (or label flips, unlabelled) with intervals."""
    from ferwild.audit.occlusion import occlusion_probe, write_occlusion_report
    from ferwild.runs import RunError

    try:
        result = occlusion_probe(run, data, split=split, max_faces=max_faces,
                                 detectors=_split_list(detectors) or (), detector_photos=detector_photos,
                                 n_bootstrap=bootstrap, batch_size=batch_size, seed=seed, device=device,
                                 progress=lambda m: err_console.print(f"  {m}", highlight=False))
        write_occlusion_report(result, out)
    except (RunError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    for name, probe in result["probes"].items():
        drop = probe.get("accuracy", {}).get("drop")
        figure = (f"accuracy -{100 * drop['value']:.1f} points" if drop and drop["value"] is not None
                  else f"{100 * probe['flip_rate']['value']:.1f}% of labels flipped")
        console.print(f"- {name}: {figure}", highlight=False)
    console.print(f"written to {out}/ (occlusion.json, occlusion.md, occlusion.png)", highlight=False)


@app.command(**command_settings())
def rebalance(
    data: Path = typer.Option(..., "--data", help="Prepared dataset to rebalance (its train split)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: a prepared dataset for `ferwild train`."),
    attributes: str = typer.Option(..., help="Comma-separated attributes, e.g. gender or gender,occlusion."),
    target: str = typer.Option("max", help="Rows per attribute x class cell: max | median | COUNT."),
    split: str = typer.Option("train", help="Split to rebalance (val/test are copied unchanged)."),
    max_copies: int = typer.Option(20, help="At most this many augmented copies of one face."),
    seed: int = typer.Option(0, help="Seed of the augmentation."),
    workers: int = typer.Option(0, help="Worker processes (0 = the available CPUs)."),
    overwrite: bool = typer.Option(False, help="Replace a non-empty output folder."),
) -> None:
    """Balance training data over attribute x class cells (resampling + augmentation)."""
    from ferwild.audit.rebalance import RebalanceConfig
    from ferwild.audit.rebalance import rebalance as run_rebalance

    try:
        config = RebalanceConfig(attributes=_split_list(attributes) or (), target=target, split=split,
                                 max_copies_per_row=max_copies, seed=seed, workers=workers)
        result = run_rebalance(data, out, config, overwrite=overwrite)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        _fail(str(exc))
    cells = result.get("cells", [])
    table = Table(title=f"{split} rows per cell, before -> after (target {result.get('target')})")
    keys = [k for k in (cells[0] if cells else {}) if k not in ("before", "after", "reached_target")]
    for col in keys + ["before", "after", "reached"]:
        table.add_column(col, justify="right" if col in ("before", "after") else "left")
    for c in cells:
        table.add_row(*[str(c[k]) for k in keys], str(c["before"]), str(c["after"]),
                      "yes" if c.get("reached_target") else "no")
    console.print(table)
    console.print(f"written to {out}/ - train on it with `ferwild train --data {out} ...`", highlight=False)


@app.command(**command_settings())
def monitor(
    batches: list[Path] = typer.Argument(..., help="New batches in time order: prepared folders, or image "
                                         "folders (prepared unlabelled on the fly)."),
    run: Path = typer.Option(..., "--run", help="The deployed run directory (or ferwild:fer2013_vgg)."),
    reference: Path = typer.Option(..., "--reference", help="The prepared dataset the run was trained on."),
    history: Optional[Path] = typer.Option(None, help="History folder (default RUN/monitor)."),
    alpha: float = typer.Option(0.01, help="Combined shift p-value below which a batch may be flagged."),
    auc_threshold: float = typer.Option(0.65, help="Domain AUC a batch must also reach to be flagged."),
    patience: int = typer.Option(1, help="Consecutive flagged batches that mean: retrain."),
    fail_on_retrain: bool = typer.Option(False, help="Exit with code 3 when retraining is advised (for cron/CI)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
) -> None:
    """Score new batches for shift against the reference; keep a history; say when to retrain."""
    from ferwild.audit.monitor import MonitorConfig
    from ferwild.audit.monitor import monitor as run_monitor
    from ferwild.data.prepare import PrepareError
    from ferwild.runs import RunError

    try:
        config = MonitorConfig(alpha=alpha, auc_threshold=auc_threshold, patience=patience, device=device)
        with ProgressBars() as bars:
            hist = run_monitor(run, reference, [str(b) for b in batches], history_dir=history, config=config,
                               progress=lambda m: bars.console.print(f"  {m}", highlight=False),
                               batch_progress=bars.update_task)
    except (RunError, ValueError, PrepareError) as exc:
        _fail(str(exc))
    table = Table(title="shift per batch (latest last)")
    for col in ("batch", "n", "shift p", "domain AUC", "pred. mix TV", "mean conf.", "flagged", "retrain"):
        table.add_column(col, justify="left" if col == "batch" else "right")
    for _, r in hist.iterrows():
        table.add_row(str(r["batch"]), str(int(r["n"])), f"{r['p_value']:.2g}", f"{r['domain_auc']:.3f}",
                      f"{r['predicted_mix_tv']:.3f}", f"{r['mean_max_prob']:.3f}",
                      "yes" if r["flagged"] else "no", "[bold red]RETRAIN[/]" if r["retrain"] else "no")
    console.print(table)
    where = history or Path(run) / "monitor"
    last = hist.iloc[-1]
    if last["retrain"]:
        console.print(f"[bold red]retrain advised[/]: {patience} consecutive batch(es) shifted "
                      f"(shift p < {alpha} and domain AUC >= {auc_threshold}). History: {where}/history.csv",
                      highlight=False)
        if fail_on_retrain:
            raise typer.Exit(3)
    else:
        console.print(f"no retraining needed yet. History: {where}/history.csv", highlight=False)


def _recognizer(run: Optional[Path], onnx: Optional[Path], *, detector: str, min_confidence: Optional[float],
                max_faces: Optional[int], device: str, which: str = "best", abstain_below: Optional[float] = None):
    """A Recognizer from ``--run`` or ``--onnx`` (at most one; neither: the shipped default
    model), or a clean CLI error."""
    from ferwild.recognizer import Recognizer, RecognizerError
    from ferwild.shipped import default_run

    if run is not None and onnx is not None:
        _fail("give at most one of --run RUN_DIR or --onnx MODEL.onnx")
    if run is None and onnx is None:
        run = default_run()
    kwargs = {"detector": detector, "min_confidence": min_confidence, "max_faces": max_faces,
              "abstain_below": abstain_below}
    try:
        if run is not None:
            return Recognizer.from_run(run, which=which, device=device, **kwargs)
        return Recognizer.from_onnx(onnx, **kwargs)
    except RecognizerError as exc:
        _fail(str(exc))


_RUN_OPTION = typer.Option(None, "--run", help="A run directory written by `ferwild train`, a study (its best "
                           "run) or a shipped model (ferwild:ferplus_vgg, the default when neither --run nor "
                           "--onnx is given; the live paths - `ferwild live`, --detector fast, the page's Live "
                           "mode - read with the live model ferwild:ferplus_live).")
_ONNX_OPTION = typer.Option(None, "--onnx", help="An ONNX file written by `ferwild export` (instead of --run).")
_DETECTOR_OPTION = typer.Option("mtcnn", help="mtcnn (find and align every face) | fast (MediaPipe BlazeFace "
                                "short-range: several times faster than MTCNN, most on video frames; faces from ~40 px "
                                "in a 640 px frame) | "
                                "fast-tiled (the same, also over tiles: groups) | none (each image is already one "
                                "face crop).")
_VERBOSE_OPTION = typer.Option(False, "--verbose", "-v", help="Also print the raw detail behind a message "
                               "(e.g. the decoder's own error for a file that is not a video).")
_ABSTAIN_OPTION = typer.Option(None, help="Label a face 'uncertain' when its top class is less probable than "
                               "this (e.g. 0.5; the model card's risk-coverage table says what each value "
                               "keeps); its probabilities are still written.")


@app.command(**command_settings())
def predict(
    inputs: list[Path] = typer.Argument(..., help="Images, videos and folders of them (searched recursively)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: predictions.csv, results.jsonl, "
                             "summary.json[, annotated/]."),
    run: Optional[Path] = _RUN_OPTION,
    onnx: Optional[Path] = _ONNX_OPTION,
    detector: str = _DETECTOR_OPTION,
    min_confidence: Optional[float] = typer.Option(None, help="Face detector threshold (default: the one "
                                                   "the training data was prepared with)."),
    max_faces: Optional[int] = typer.Option(None, help="At most this many faces per image, largest first."),
    abstain_below: Optional[float] = _ABSTAIN_OPTION,
    fps: Optional[float] = typer.Option(None, help="Videos: sample about this many frames per second."),
    every_n_frames: int = typer.Option(1, help="Videos: every n-th frame (when --fps is not given)."),
    max_frames: Optional[int] = typer.Option(None, help="Videos: at most this many sampled frames each."),
    annotate: bool = typer.Option(False, help="Also write images and videos with boxes and labels drawn."),
    batch_images: int = typer.Option(32, help="Images analysed (and saved) at a time."),
    device: str = typer.Option("auto", help="auto | cpu | cuda (with --run)."),
    overwrite: bool = typer.Option(False, help="Start afresh instead of resuming what OUT holds."),
    ray_address: Optional[str] = typer.Option(None, help="Spread the files over Ray actors: local | auto | "
                                              "ray://HOST:10001 (OUT on storage every node sees)."),
    verbose: bool = _VERBOSE_OPTION,
) -> None:
    """Recognise expressions in photos and videos; resumable, bad files reported and skipped."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ferwild.parallel import RayUnavailable
    from ferwild.predict import PredictConfig, predict_files
    from ferwild.recognizer import RecognizerError

    _verbose_detail(verbose)
    try:
        config = PredictConfig(sample_fps=fps, every_n_frames=every_n_frames, max_frames=max_frames,
                               annotate=annotate, batch_images=batch_images)
    except ValueError as exc:
        _fail(str(exc))
    if run is None and onnx is None and detector in ("fast", "fast-tiled"):
        from ferwild.shipped import live_run

        run = Path(live_run())  # the fast path's model: the live model, as in `ferwild live`
    recognizer = _recognizer(run, onnx, detector=detector, min_confidence=min_confidence, max_faces=max_faces,
                             device=device, abstain_below=abstain_below)
    columns = (TextColumn("files"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=err_console, transient=True) as bar:
            task = bar.add_task("files", total=None)
            summary = predict_files(recognizer, inputs, out, config, overwrite=overwrite,
                                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                                    log=lambda m: bar.console.print(f"  {m}", highlight=False),
                                    ray_address=ray_address)
    except (RecognizerError, RayUnavailable) as exc:
        _fail(str(exc))
    console.print(f"{summary['n_images']} images, {summary['n_videos']} videos ({summary['n_frames']} frames): "
                  f"{summary['n_faces']} faces, {summary['n_without_face']} without a face, "
                  f"{summary['n_errors']} errors", highlight=False)
    if summary["labels"]:
        console.print("labels: " + ", ".join(f"{k} {v}" for k, v in summary["labels"].items()), highlight=False)
    for e in summary["errors"][:10]:
        error = str(e["error"]).removeprefix(f"{e['source']}: ")  # the file is named once
        console.print(f"[yellow]skipped[/] {e['source']}: {error}", highlight=False)
    if summary["n_errors"] > 10:
        console.print(f"... {summary['n_errors'] - 10} more in {out / 'summary.json'}", highlight=False)
    console.print(f"written to {out}/ (predictions.csv, results.jsonl, summary.json"
                  f"{', annotated/' if annotate else ''})", highlight=False)


@app.command(**command_settings())
def live(
    source: str = typer.Argument("0", help="A camera index (0), a device (/dev/video2), a stream URL "
                                 "(rtsp://..., http://...) or a video file."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Record here: live.mp4 (annotated), "
                                       "frames.csv (per frame and face, raw and smoothed), summary.json."),
    run: Optional[Path] = _RUN_OPTION,
    onnx: Optional[Path] = _ONNX_OPTION,
    detector: str = typer.Option("fast", help="fast (BlazeFace, a few ms a frame, faces near the camera) | "
                                 "fast-tiled (also in tiles: groups, ~4x the cost) | mtcnn (slower, finds smaller "
                                 "faces)."),
    min_confidence: Optional[float] = typer.Option(None, help="Face detector threshold."),
    max_faces: Optional[int] = typer.Option(None, help="At most this many faces per frame, largest first."),
    abstain_below: Optional[float] = _ABSTAIN_OPTION,
    window: Optional[bool] = typer.Option(None, "--window/--no-window", help="Show a window (default: when "
                                          "there is a display and OpenCV: pip install 'ferwild[live]')."),
    pace: bool = typer.Option(True, "--pace/--no-pace", help="Files: play at their own frame rate, dropping "
                              "frames rather than lag (--no-pace: every frame, as fast as it goes)."),
    loop: bool = typer.Option(False, help="Files: start over at the end (a long stream from a short clip)."),
    max_frames: Optional[int] = typer.Option(None, help="Stop after this many processed frames."),
    duration: Optional[float] = typer.Option(None, help="Stop after this many seconds."),
    stall_timeout: float = typer.Option(5.0, help="Give up when the source sends no frame for this long (s)."),
    record: bool = typer.Option(True, "--record/--no-record", help="With --out: also write the annotated video."),
    half_life: float = typer.Option(0.25, help="Smoothing: seconds for an old reading's weight to halve (0: off)."),
    backend: str = typer.Option("onnx", help="onnx (ONNX Runtime; a --run is exported once and cached) | torch."),
    tta: str = typer.Option("none", help="Test-time augmentation for a --run: none (live default: the flip pass "
                            "doubles a face's cost; smoothing over frames does its work) | flip | model (as "
                            "trained)."),
    device: str = typer.Option("cpu", help="With --backend torch: cpu | cuda | auto."),
    verbose: bool = _VERBOSE_OPTION,
) -> None:
    """Read every face of a camera, stream or video as it plays: boxes, labels, per-person bars.

    Drops frames rather than lag, prints the frame rate it holds, and stops cleanly on Ctrl-C or q
    (in the window), keeping what it recorded. Without a display, record with --out.
    """
    from ferwild.live import LiveConfig, LiveError, live_recognizer, run_live

    _verbose_detail(verbose)
    if backend not in ("onnx", "torch"):
        _fail(f"unknown backend {backend!r}; expected onnx or torch")
    if tta not in ("none", "flip", "model"):
        _fail(f"unknown tta {tta!r}; expected none, flip or model")
    try:
        config = LiveConfig(out=out, window=window, pace=pace, loop=loop, max_frames=max_frames, duration_s=duration,
                            stall_timeout_s=stall_timeout, record=record, half_life_s=half_life)
    except ValueError as exc:
        _fail(str(exc))
    try:
        recognizer = live_recognizer(run, onnx, detector=detector, min_confidence=min_confidence, max_faces=max_faces,
                                     abstain_below=abstain_below, backend=backend, device=device,
                                     tta=None if tta == "model" else tta,
                                     log=lambda m: err_console.print(m, highlight=False))
        summary = run_live(recognizer, source, config, log=lambda m: err_console.print(m, highlight=False))
    except LiveError as exc:
        _fail(str(exc))
    for line in live_summary_lines(summary):
        console.print(line, highlight=False)
    if out is not None:
        console.print(f"written to {out}/ (frames.csv, summary.json{', live.mp4' if record else ''})", highlight=False)
    if summary["error"]:
        err_console.print(f"[red]error[/]: {summary['error']} (what was read before it is kept)", highlight=False)
        raise typer.Exit(1)


def live_summary_lines(summary: dict) -> list[str]:
    """The closing lines of ``ferwild live``: one short phrase each (none wraps mid-phrase at 80
    columns), numbers and nouns agreeing ("1 face, 1 person", "3 faces, 2 people")."""
    return [f"{count(summary['frames_processed'], 'frame')} read at {summary['fps_processed']:.1f} frames/s "
            f"({summary['frames_dropped']} dropped)",
            f"{count(summary['faces'], 'face')}, {count(summary['tracks'], 'person', 'people')}",
            f"stopped: {summary['stop_reason']}"]


@app.command(**command_settings())
def export(
    run: Path = typer.Option(..., "--run", help="A run directory written by `ferwild train` or a shipped model "
                             "(ferwild:fer2013_vgg)."),
    out: Path = typer.Option(..., "--out", "-o", help="The .onnx file to write."),
    which: str = typer.Option("best", help="Checkpoint: best | last."),
    opset: int = typer.Option(18, help="ONNX opset."),
    check: bool = typer.Option(True, help="Compare ONNX Runtime with PyTorch on random batches."),
    int8: bool = typer.Option(False, "--int8/--no-int8", help="Also write an int8 twin beside it (<stem>.int8.onnx)."),
    calibration: Optional[Path] = typer.Option(None, "--calibration", help="A prepared dataset (`ferwild prepare`) "
                                               "whose train crops (up to 512) calibrate --int8; without it: dynamic."),
) -> None:
    """Export a run to one self-contained ONNX file (labels, preprocessing, face alignment inside)."""
    from ferwild.export import export_int8_twin, export_onnx
    from ferwild.runs import RunError

    if calibration is not None and not int8:
        _fail("--calibration calibrates the int8 twin; add --int8")
    try:
        report = export_onnx(run, out, which=which, opset=opset, check=check)
    except (RunError, ValueError, OSError) as exc:
        _fail(str(exc))
    size = report.get("size_bytes", 0) / 1e6
    parity = (report.get("parity") or {}).get("max_abs_diff_probabilities")
    console.print(f"wrote {out} ({size:.1f} MB, opset {report.get('opset')}, {report.get('exporter')} exporter)"
                  + (f"; ONNX Runtime vs PyTorch: max |dp| = {parity:.2e}" if parity is not None else ""),
                  highlight=False)
    if int8:
        if calibration is None:
            console.print("no --calibration given: dynamic int8 quantisation (weights only; usually slower than "
                          "fp32 on CPU)", highlight=False)
        try:
            twin = export_int8_twin(out, calibration_dir=calibration)
        except (ValueError, OSError) as exc:
            _fail(str(exc))
        agree, method = twin["agreement"], twin["method"]
        console.print(f"wrote {twin['path']} ({twin['size_bytes'] / 1e6:.1f} MB, {twin['mode']} int8"
                      + (f", {method} calibration on {twin['calibration_size']} crops" if method else "")
                      + f"); vs fp32 on {agree['faces']} {agree['inputs']}: labels agree "
                      f"{agree['argmax_agreement']:.1%}, max |dp| = {agree['max_abs_diff_probabilities']:.2e}",
                      highlight=False)


@app.command(**command_settings())
def serve(
    run: Optional[Path] = _RUN_OPTION,
    onnx: Optional[Path] = _ONNX_OPTION,
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, help="TCP port."),
    detector: str = _DETECTOR_OPTION,
    min_confidence: Optional[float] = typer.Option(None, help="Face detector threshold."),
    max_faces: Optional[int] = typer.Option(None, help="At most this many faces per image."),
    abstain_below: Optional[float] = _ABSTAIN_OPTION,
    max_upload_mb: float = typer.Option(20, help="Largest accepted image file (HTTP 413 above)."),
    max_files: int = typer.Option(16, help="Most images per request."),
    device: str = typer.Option("auto", help="auto | cpu | cuda (with --run)."),
) -> None:
    """Serve the model over HTTP: a web page, a JSON API and the API's docs.

    \b
    GET /               the web page: photos, a webcam snapshot or live video
    POST /predict       photos in (multipart `files`), faces and labels out (JSON)
    WebSocket /ws/live  the page's live mode: webcam frames in, faces out
    GET /info           the model, its labels and the limits
    GET /health         {"status": "ok"}
    GET /docs           the API's interactive docs (Swagger UI)
    GET /redoc          the same API docs, as ReDoc (both work offline)
    """
    from ferwild.serve import live_detector_for, serve as run_server

    recognizer = _recognizer(run, onnx, detector=detector, min_confidence=min_confidence, max_faces=max_faces,
                             device=device, abstain_below=abstain_below)
    live_recognizer = None
    if run is None and onnx is None:  # the page's Live mode reads with the live model, as `ferwild live` does
        from ferwild.live import LiveError, live_recognizer as make_live_recognizer

        try:
            live_recognizer = make_live_recognizer(min_confidence=min_confidence, max_faces=max_faces,
                                                   abstain_below=abstain_below,
                                                   log=lambda m: err_console.print(m, highlight=False))
        except LiveError as exc:
            _fail(str(exc))
    console.print(f"serving {recognizer.source or recognizer.info()['model']} ({recognizer.info()['model']}, "
                  f"{recognizer.backend}) on http://{host}:{port}/"
                  + (f"; live mode: {live_recognizer.source}" if live_recognizer is not None else "")
                  + f"; live detector: {live_detector_for(recognizer.detector_name)}", highlight=False)
    run_server(recognizer, host=host, port=port, max_upload_mb=max_upload_mb, max_files=max_files,
               live_recognizer=live_recognizer)


@app.command(**command_settings())
def demo(
    out: Path = typer.Option(Path("demo_out"), "--out", "-o", help="Output folder."),
    n: int = typer.Option(1200, "--n", help="Synthetic images per set."),
    size: int = typer.Option(48, help="Cached crop size."),
    seed: int = typer.Option(0, help="Seed of everything."),
    seeds: int = typer.Option(1, help="Seeds per study cell."),
    workers: int = typer.Option(0, help="Concurrent trials, one thread each (0 = the available CPUs)."),
    quick: bool = typer.Option(False, "--quick", help="Smoke run: two training batches per epoch."),
) -> None:
    """The main job on embedded data: synth -> prepare -> study -> report -> audit -> export -> predict.

    Each step's output stays on disk (OUT/synth, OUT/prepared/{reference,production},
    OUT/study.yaml, OUT/study/, OUT/audit/, OUT/model.onnx, OUT/ship/) and its command is
    printed, so any step can be rerun by hand.
    """
    from ferwild.demo import run_demo

    result = run_demo(out, n=n, size=size, seed=seed, seeds=seeds, workers=workers or None, quick=quick,
                      log=lambda m: console.print(m, highlight=False, markup=False, soft_wrap=True),
                      section=_section, command=_show_command, prepared=print_prepare_summary)
    _section("done")
    console.print(f"study report: {result.study_dir / 'report.html'}; audit report: {result.audit_dir / 'report.html'}; "
                  f"selected run: {result.run_dir}; prepared data: {out / 'prepared'}; model: {result.onnx_path}; "
                  f"predictions: {result.predictions_dir}; serve it: ferwild serve --onnx {result.onnx_path}",
                  highlight=False, soft_wrap=True)


def main() -> None:  # pragma: no cover - console entry point
    """Console entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
