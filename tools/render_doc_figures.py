"""Write every published figure of README.md, MODEL_CARD.md and docs/*.md from the file that measured it.

A figure in prose sits between two markers naming its source, the key inside it and its format::

    <!-- fig card:ferplus_vgg results.wild_report.accuracy pct1 -->82.8%<!-- /fig -->

a generated table between ``<!-- figures:NAME -->`` and ``<!-- /figures:NAME -->`` (NAME is
one of ``BLOCKS``), and a figure quoted from outside ferwild (a paper, another tool's page)
between ``<!-- ext WHERE IT COMES FROM -->`` and ``<!-- /ext -->``, and a figure ferwild measured in a
run whose output was not kept between ``<!-- unkept THE RUN -->`` and ``<!-- /unkept -->`` (listed by
``--check`` until the run is redone with its output kept). Sources (``SOURCE`` before the key):

* ``card:NAME``: the model's ``card.json`` (``src/ferwild/weights/NAME/``, or
  ``docs/experiments/NAME.card.json`` for a model measured and kept out of the package),
  written by the recipe that packed and measured it;
* ``bench:STEM``: ``docs/bench/STEM.json``, a benchmark's ``--json`` output or a command's
  ``summary.json``, kept as the run wrote it (JSON pretty-printed, no value touched).

Keys are dotted paths (``results.wild_report.accuracy``; a list index is a number). Formats are
``FORMATS``' names (``pct1``: 0.8279 -> ``82.8%``). Only the text between markers is replaced, so
the prose around is never touched. The model cards (MODEL_CARD.md, docs/model_card_*.md) are
whole pages rendered from their ``card.json`` by ``recipes/render_model_cards.py``; ``--check``
renders them again too. ``tests/test_doc_figures.py`` runs the check and also fails when a
figure that a marker or table publishes is typed again, unmarked, elsewhere in the docs.

    python tools/render_doc_figures.py            # rewrite the figures in place
    python tools/render_doc_figures.py --check    # exit 1, naming each stale or unresolvable figure
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "src" / "ferwild" / "weights"
BENCH = REPO / "docs" / "bench"

FIG = re.compile(r"<!-- fig (?P<source>\S+) (?P<key>\S+) (?P<fmt>\S+) -->(?P<text>.*?)<!-- /fig -->", re.S)
BLOCK = re.compile(r"<!-- figures:(?P<name>[\w-]+) -->\n(?P<text>.*?)<!-- /figures:(?P=name) -->", re.S)
# a figure quoted from outside ferwild (a paper, another tool's page, a user's report): no file
# of ours can hold it, so it says where it comes from instead
EXT = re.compile(r"<!-- ext (?P<origin>[^>]+?) -->(?P<text>.*?)<!-- /ext -->", re.S)
# a figure ferwild measured in a run whose output was not kept: it names the run, so the debt is
# visible and counted (``--check`` lists them) until the run is redone with its output kept
UNKEPT = re.compile(r"<!-- unkept (?P<run>[^>]+?) -->(?P<text>.*?)<!-- /unkept -->", re.S)


def documents() -> list[Path]:
    """The pages whose figures are published: README.md, MODEL_CARD.md and docs/*.md."""
    return [REPO / "README.md", REPO / "MODEL_CARD.md", *sorted((REPO / "docs").glob("*.md"))]


# --- sources -------------------------------------------------------------------------------------

def source_path(source: str) -> Path:
    """The file a source name points to (``card:NAME`` or ``bench:STEM``)."""
    kind, _, name = source.partition(":")
    if kind == "card":
        shipped = WEIGHTS / name / "card.json"
        return shipped if shipped.is_file() else REPO / "docs" / "experiments" / f"{name}.card.json"
    if kind == "bench":
        return BENCH / f"{name}.json"
    raise KeyError(f"unknown source kind {kind!r} in {source!r} (card:NAME or bench:STEM)")


@lru_cache(maxsize=None)
def load(source: str) -> Any:
    """The parsed JSON of a source (read once per process)."""
    path = source_path(source)
    if not path.is_file():
        raise KeyError(f"{source}: no file {path.relative_to(REPO)}")
    return json.loads(path.read_text(encoding="utf-8"))


def lookup(source: str, key: str) -> Any:
    """The value at dotted ``key`` in ``source`` (a key with dots of its own, ``patch_0.5``, is
    written as it is); KeyError naming what is missing."""
    value = load(source)
    parts = key.split(".")
    while parts:
        part = parts.pop(0)
        if isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
            continue
        # a name with dots in it (an occluder "patch_1.5", beside "patch_1"): the longest match
        names = [".".join([part, *parts[:k]]) for k in range(len(parts), -1, -1)]
        found = next((n for n in names if isinstance(value, dict) and n in value), None)
        if found is None:
            raise KeyError(f"{source} has no {key!r} (stopped at {part!r})")
        value = value[found]
        del parts[:found.count(".") - part.count(".")]
    if value is None:
        raise KeyError(f"{source}: {key!r} is null (not measured)")
    return value


# --- formats -------------------------------------------------------------------------------------

def _pct(digits: int, sign: bool = False) -> Callable[[Any], str]:
    return lambda v: f"{100 * v:{'+' if sign else ''}.{digits}f}%"


def _num(digits: int) -> Callable[[Any], str]:
    return lambda v: f"{v:,.{digits}f}"


def _with_ci(v: dict, number: str, unit: str) -> str:
    text = number.format(100 * v["value"]) + unit
    if v.get("ci_low") is None:
        return text
    return f"{text} [{number.format(100 * v['ci_low'])}, {number.format(100 * v['ci_high'])}]"


FORMATS: dict[str, Callable[[Any], str]] = {
    "pct0": _pct(0), "pct1": _pct(1), "pct2": _pct(2),
    "pts1": lambda v: f"{100 * v:.1f}",          # a share as points, no % sign (a table of points)
    "pts2": lambda v: f"{100 * v:.2f}",
    "int": lambda v: f"{int(v):,}",               # 3343 -> 3,343
    "f0": _num(0), "f1": _num(1), "f2": _num(2), "f3": _num(3),
    "x1": lambda v: f"{v:.1f}x", "x2": lambda v: f"{v:.2f}x",
    "mb1": lambda v: f"{v / 1e6:.1f} MB",        # bytes
    "min0": lambda v: f"{v / 60:.0f} min",       # seconds
    "ci1": lambda v: f"[{100 * v[0]:.1f}, {100 * v[1]:.1f}]",           # a share's interval, in points
    "cipts1": lambda v: f"{100 * v[0]:+.1f} to {100 * v[1]:+.1f}",      # a difference's interval, in points
    "range2": lambda v: f"[{v[0]:+.2f}, {v[1]:+.2f}]",                   # an interval already in points
    "sf2": lambda v: f"{v:+.2f}",                                         # a signed difference
    "spts1": lambda v: f"{100 * v:+.1f}",                                 # a signed share difference, in points
    # a {"value", "ci_low", "ci_high"} dict (ferwild's intervals) as one figure with its interval
    "shareci1": lambda v: _with_ci(v, "{:.1f}", "%"),                    # 82.3% [81.1, 83.5]
    "ptsci1": lambda v: _with_ci(v, "{:.1f}", ""),                       # 15.7 [13.8, 17.6] (points)
    "sptsci1": lambda v: _with_ci(v, "{:+.1f}", ""),                     # +0.8 [-2.7, +4.4] (points)
    "str": str,                                                           # a name or version
    "pts0": lambda v: f"{100 * v:.0f}",                                   # a share as whole points, no % sign
    "drop0": lambda v: f"{-100 * v:.0f}",                                 # a fall said as a drop, whole points
    "ci0": lambda v: f"[{100 * v[0]:.0f}, {100 * v[1]:.0f}]",             # a share's interval, in whole points
    "sci1": lambda v: f"[{100 * v[0]:+.1f}, {100 * v[1]:+.1f}]",          # a difference's interval, bracketed
    "wpts1": lambda v: f"{100 * (v[1] - v[0]):.1f}",                      # a share interval's width, in points
    "ci3": lambda v: f"[{v[0]:.3f}, {v[1]:.3f}]",                         # an interval of a plain number (an AUC)
    # a {"mean", "std", "min", "max", "per_seed"} spread over seeds (the analyses' figures over seeds)
    "pm1": lambda v: f"{100 * v['mean']:.1f} ± {100 * v['std']:.1f}",                      # 35.0 ± 1.7
    "pctpm1": lambda v: f"{100 * v['mean']:.1f}% ± {100 * v['std']:.1f}",                 # 47.5% ± 1.1
    "pctspan1": lambda v: f"{100 * v['mean']:.1f}% ({100 * v['min']:.1f}-{100 * v['max']:.1f})",  # 54.5% (53.3-55.8)
    "seeds1": lambda v: ", ".join(f"{100 * x:.1f}" for x in v["per_seed"]),               # 36.8, 34.6, 33.5
    "span1": lambda v: f"{v['min']:.1f}-{v['max']:.1f}",                                   # 2.5-3.5 (minutes)
    "h1": lambda v: f"{v / 3600:.1f} hours",                                               # seconds
    "sseeds1": lambda v: ", ".join(f"{100 * x:+.1f}" for x in v["per_seed"]),             # +0.5, +0.5, +0.8
    # a difference a - b said the other way round (b - a): the page puts the better cell first
    "negspts1": lambda v: f"{-100 * v:+.1f}",
    "negsci1": lambda v: f"[{-100 * v[1]:+.1f}, {-100 * v[0]:+.1f}]",
}


def figure(source: str, key: str, fmt: str) -> str:
    """The text a marker publishes: ``key`` of ``source`` in format ``fmt``."""
    if fmt not in FORMATS:
        raise KeyError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")
    return FORMATS[fmt](lookup(source, key))


def marker(source: str, key: str, fmt: str) -> str:
    """A figure with its markers, as written into a page (and into generated tables)."""
    return f"<!-- fig {source} {key} {fmt} -->{figure(source, key, fmt)}<!-- /fig -->"


# --- generated tables ----------------------------------------------------------------------------

def _pair(source: str, prefix: str, bold: bool = False) -> str:
    """``accuracy / macro-F1`` of one measurement, each figure marked with its source."""
    text = f"{marker(source, prefix + '.accuracy', 'pct1')} / {marker(source, prefix + '.macro_f1', 'pct1')}"
    return f"**{text}**" if bold else text


def shipped_models_table() -> str:
    """README's table of the shipped models: the same measurements, each column naming the people
    (or faces) it was measured on."""
    d = "card:ferplus_vgg"
    n = lambda key: marker(d, key, "int")  # noqa: E731 - a counted set, from the card
    lines = [
        f"| model | real photos, **report** people: `wild_dev`'s people no choice saw ({n('results.wild_report.n')}"
        f" photos) | real photos, **all**: every `wild_dev` photo with a face ({n('results.wild_all.n')}; choice"
        f" and report people) | FER+ test, majority ({n('results.ferplus_test.n')}) | FER2013 PrivateTest, its"
        f" labels ({n('results.fer2013_privatetest.n')}) |",
        "|---|---|---|---|---|",
        f"| **ferwild `ferplus_vgg`** (default) | {_pair(d, 'results.wild_report', True)} | "
        f"{_pair(d, 'results.wild_all')} | {_pair(d, 'results.ferplus_test', True)} | "
        f"{_pair(d, 'results.fer2013_privatetest')} |",
        # fer2013_vgg measured by the default's recipe, the same way and on the same faces
        f"| ferwild `fer2013_vgg` | {_pair(d, 'baseline_results.wild_report')} | "
        f"{_pair(d, 'baseline_results.wild_all')} | "
        f"{_pair(d, 'baseline_results.ferplus_test')} | {_pair(d, 'baseline_results.fer2013_privatetest', True)} |",
        f"| ferwild `ferplus_live` (live paths, fast) | {_pair('card:ferplus_live', 'results.wild_report')} | "
        f"{_pair('card:ferplus_live', 'results.wild_all')} | {_pair('card:ferplus_live', 'results.ferplus_test')} | "
        f"{_pair('card:ferplus_live', 'results.fer2013_privatetest')} |",
        f"| ferwild `ferplus_ensemble` (accurate, 2x the CPU) | {_pair('card:ferplus_ensemble', 'results.wild_report')} | "
        f"{_pair('card:ferplus_ensemble', 'results.wild_all')} | {_pair('card:ferplus_ensemble', 'results.ferplus_test')} | "
        f"{_pair('card:ferplus_ensemble', 'results.fer2013_privatetest')} |",
        f"| fer {marker(d, 'peer_wild_dev.fer_version', 'str')} (`pip install fer`; MTCNN, largest face) | - | "
        f"{_pair(d, 'peer_wild_dev.on_faces')} (the {marker(d, 'peer_wild_dev.on_faces.n', 'int')} of "
        f"{marker(d, 'peer_wild_dev.n_photos', 'int')} photos where it finds a face) | - | "
        f"{marker(d, 'fer2013_anchors.0.1', 'pct1')} / {marker(d, 'fer2013_anchors.0.2', 'pct1')} (published) |",
    ]
    return "\n".join(lines) + "\n"


def live_fps_table() -> str:
    """README's frames-per-second table: bench/bench_video.py's kept JSON, each row naming its model."""
    b = "bench:bench_video_live_model"
    row = lambda key: marker(b, key, "f1")  # noqa: E731
    lines = [
        "| frames/s, end to end | 640x360, 1 face | 1280x720, 1 face | 1280x720, 5 faces |",
        "|---|---|---|---|",
        f"| `--detector fast` (`fast-tiled` for 5 faces), `ferplus_live` (`ferwild live` with no `--run`) | "
        f"**{row('fast_fps_640x360')}** | **{row('fast_fps_1280x720')}** | **{row('fast_fps_5faces')}** |",
        f"| the same, `ferplus_live`, recording the annotated video (`--out`) | | | "
        f"{row('fast_recording_fps_5faces')} |",
        f"| the same, the default `ferplus_vgg` (`--run ferwild:ferplus_vgg`), no recording | | | "
        f"{row('fast_default_fps_5faces')} |",
        f"| MTCNN in place of the fast detector (one thread), `ferplus_live` | {row('mtcnn_fps_640x360')} | "
        f"{row('mtcnn_fps_1280x720')} | {row('mtcnn_fps_5faces')} |",
    ]
    return "\n".join(lines) + "\n"


# --- docs/real-study.md's tables: analyses/real_study_analysis.py and analyses/leakage_wild_dev.py --------

STUDY = "bench:real_study_analysis"
LEAKAGE = "bench:leakage_wild_dev"
_OPTIMIZERS = {"sgd": "SGD", "rmsprop": "RMSprop", "adam": "Adam"}


def _lr(value: str) -> str:
    """0.001 -> 1e-3, 2e-05 -> 2e-5: learning rates as the study's tables write them."""
    mantissa, exponent = f"{float(value):.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _cell_name(cell: str) -> str:
    """A cell of the analysis (``epochs=5``, ``optimizer=adam, lr=0.001``, ``lr=1e-05``,
    ``scheduler=cosine``) as the page names it."""
    params = dict(part.split("=", 1) for part in cell.split(", "))
    if "epochs" in params:
        return f"{params['epochs']} epochs"
    if "scheduler" in params:
        return {"f1_drop": "F1-drop"}.get(params["scheduler"], params["scheduler"])
    return f"{_OPTIMIZERS[params.get('optimizer', 'adam')]} {_lr(params['lr'])}"


def _cells(experiment: str) -> list[tuple[str, str]]:
    """(page name, key) of each cell of one of the study's tables, in the analysis' order."""
    cells = lookup(STUDY, f"single_seed.{experiment}.cells")
    return [(_cell_name(c["cell"]), f"single_seed.{experiment}.cells.{i}") for i, c in enumerate(cells)]


def _selected_cell() -> tuple[str, str]:
    """(experiment, page name) of the cell chosen on validation."""
    chosen = lookup(STUDY, "study.selected")
    params = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in chosen["params"].items())
    return chosen["experiment"], _cell_name(params)


def real_study_summary_table() -> str:
    """Tasks 1 and 2: the main model and the baseline over 3 seeds, beside the study's figure."""
    lines = ["| model | val macro-F1 | test accuracy | test macro-F1 | test crowd agreement |", "|---|---|---|---|---|"]
    for name, title in (("main", "Task 1, main: `fer_vgg_tiny` (Table 3)"), ("baseline", "Task 2, baseline: `vit_tiny` (Table 6)")):
        k = f"study.experiments.{name}"
        lines.append(f"| {title} | {marker(STUDY, k + '.val_macro_f1', 'pm1')} | {marker(STUDY, k + '.test_accuracy', 'pm1')} | "
                     f"{marker(STUDY, k + '.test_macro_f1', 'pm1')} | {marker(STUDY, k + '.test_crowd_agreement', 'pm1')} |")
    lines.append("| the study (ViT-B/16 pretrained, its synthetic faces) | - | <!-- ext the study, Table 3 -->99.0<!-- /ext --> | "
                 "<!-- ext the study, Table 3 -->99.0<!-- /ext --> | - |")
    return "\n".join(lines) + "\n"


def real_study_ablations_table() -> str:
    """Task 3: test macro-F1 of every cell of Tables 8-10 and the added schedules, over seeds."""
    selected = _selected_cell()
    lines = ["| table | cell | test macro-F1 | seeds 0, 1, 2 |", "|---|---|---|---|"]
    for experiment, table in (("epochs", "Table 8"), ("optimizer_lr", "Table 9"), ("fine_lr", "Table 10"),
                              ("schedule", "added")):
        cells = _cells(experiment)
        if experiment in ("epochs", "schedule"):
            for i, (name, key) in enumerate(cells):
                note = " (selected on validation)" if (experiment, name) == selected else ""
                note += " (the main model)" if name in ("3 epochs", "F1-drop") else ""
                lines.append(f"| {table if i == 0 else ''} | {name}{note} | {marker(STUDY, key, 'pm1')} | "
                             f"{marker(STUDY, key, 'seeds1')} |")
            continue
        # the study's learning-rate grids: one row per optimizer, its learning rates side by side
        by_optimizer: dict[str, list[tuple[str, str]]] = {}
        for name, key in cells:
            optimizer, lr = name.split(" ")
            by_optimizer.setdefault(optimizer, []).append((lr, key))
        for i, (optimizer, row) in enumerate(by_optimizer.items()):
            lines.append(f"| {table if i == 0 else ''} | {optimizer} {' / '.join(lr for lr, _ in row)} | "
                         f"{' / '.join(marker(STUDY, key, 'pm1') for _, key in row)} | |")
    return "\n".join(lines) + "\n"


def real_study_leakage_table() -> str:
    """Identity leakage on wild_dev: the same model and budget on a split by class and by person."""
    lines = ["| split | test accuracy, mean ± sd over 3 splits | test macro-F1 | test photos whose person is in train |",
             "|---|---|---|---|"]
    for kind, title in (("random", "by class (the study's)"), ("by_person", "by person (ferwild's)")):
        seen = lookup(LEAKAGE, f"test_photos_of_people_in_train.{kind}")
        seen_text = (marker(LEAKAGE, f"test_photos_of_people_in_train.{kind}.0", "int") if seen[0] == seen[1] else
                     f"{marker(LEAKAGE, f'test_photos_of_people_in_train.{kind}.0', 'int')}-"
                     f"{marker(LEAKAGE, f'test_photos_of_people_in_train.{kind}.1', 'int')}")
        photos = marker(LEAKAGE, "per_run.0.test_photos", "int")
        lines.append(f"| {title} | {marker(LEAKAGE, f'mean.{kind}.accuracy', 'pctpm1')} | "
                     f"{marker(LEAKAGE, f'mean.{kind}.macro_f1', 'pctpm1')} | {seen_text} of {photos} |")
    return "\n".join(lines) + "\n"


def real_study_copies_table() -> str:
    """Cross-split copies: test faces with a copy among the training faces, with and without them."""
    f = "copies.shipped_fer2013_vgg_fer2013_test"
    m = "copies.study_main_over_seeds"
    lines = ["| model | test faces | with a train copy | accuracy on the copies | accuracy on the rest | "
             "test accuracy with copies minus without [95%] | macro-F1 with / without |", "|---|---|---|---|---|---|---|",
             f"| `ferwild:fer2013_vgg` on FER2013 test | {marker(STUDY, f + '.test_faces', 'int')} | "
             f"{marker(STUDY, f + '.with_a_train_copy', 'int')} | {marker(STUDY, f + '.accuracy_on_copies', 'pct1')} | "
             f"{marker(STUDY, f + '.accuracy_on_the_rest', 'pct1')} | {marker(STUDY, f + '.accuracy_difference', 'spts1')} "
             f"{marker(STUDY, f + '.accuracy_difference_ci95', 'sci1')} | {marker(STUDY, f + '.macro_f1_all', 'pct1')} / "
             f"{marker(STUDY, f + '.macro_f1_without_copies', 'pct1')} |",
             f"| the main model (`main`, 3 seeds, mean (range)) on FER+ test | {marker(STUDY, m + '.test_faces', 'int')} | "
             f"{marker(STUDY, m + '.with_a_train_copy', 'int')} ({marker(STUDY, m + '.copies_with_the_same_label', 'int')} "
             f"same label) | {marker(STUDY, m + '.accuracy_on_copies', 'pctspan1')} | "
             f"{marker(STUDY, m + '.accuracy_on_the_rest', 'pctspan1')} | {marker(STUDY, m + '.accuracy_difference.mean', 'spts1')} "
             f"(per seed: {_per_seed_differences(m)}) | "
             f"{marker(STUDY, m + '.macro_f1_all', 'pctpm1')} / {marker(STUDY, m + '.macro_f1_without_copies', 'pctpm1')} |"]
    return "\n".join(lines) + "\n"


def _per_seed_differences(key: str) -> str:
    """Each seed's difference with its 95% interval: ``+0.5 [+0.1, +0.9], ...``."""
    n = len(lookup(STUDY, key + ".accuracy_difference.per_seed"))
    return ", ".join(f"{marker(STUDY, f'{key}.accuracy_difference.per_seed.{i}', 'spts1')} "
                     f"{marker(STUDY, f'{key}.accuracy_difference_ci95_per_seed.{i}', 'sci1')}" for i in range(n))


def real_study_selection_table() -> str:
    """Selection on test: the study's rule against ferwild's over random halvings of FER+ test."""
    s = "selection_on_test"
    halvings = marker(STUDY, s + ".halvings", "int")
    lines = [f"| what | test macro-F1 (mean over {halvings} halvings) [95% range] |", "|---|---|",
             f"| the study's rule, as it would report (half A) | {marker(STUDY, s + '.study_rule_reported_on_a.mean', 'pts1')} |",
             f"| the study's rule on unseen half B | {marker(STUDY, s + '.study_rule_on_b.mean', 'pts1')} |",
             f"| **optimism** (A minus B) | **{marker(STUDY, s + '.optimism.mean', 'spts1')} points "
             f"{marker(STUDY, s + '.optimism.range95', 'sci1')}** |",
             f"| ferwild's rule on half B (`{marker(STUDY, s + '.val_pick', 'str')}`) | "
             f"{marker(STUDY, s + '.ferwild_rule_on_b.mean', 'pts1')} |",
             f"| study's pick minus ferwild's pick, on half B | "
             f"{marker(STUDY, s + '.b_difference_study_minus_ferwild.mean', 'spts1')} "
             f"{marker(STUDY, s + '.b_difference_study_minus_ferwild.range95', 'sci1')} |"]
    return "\n".join(lines) + "\n"


def real_study_single_seed_table() -> str:
    """The cell-vs-cell differences of the study's tables that do not survive the seed spread."""
    lines = ["| comparison | seed 0 alone | over 3 seeds [95%] | seeds disagree on the sign |", "|---|---|---|---|"]
    for experiment in ("epochs", "optimizer_lr", "fine_lr", "schedule", "main_vs_baseline"):
        pairs = lookup(STUDY, f"single_seed.{experiment}.pairs")
        title = lookup(STUDY, f"single_seed.{experiment}.title").split(" (")[0]
        for i, pair in enumerate(pairs):
            if pair["survives"]:
                continue
            key = f"single_seed.{experiment}.pairs.{i}"
            names = (pair["a"], pair["b"]) if experiment == "main_vs_baseline" else (_cell_name(pair["a"]), _cell_name(pair["b"]))
            # the cell with the higher mean first, so a difference reads as how much it leads by
            turn = pair["mean_difference"] < 0
            first, second = names[::-1] if turn else names
            sign, interval = ("negspts1", "negsci1") if turn else ("spts1", "sci1")
            lines.append(f"| {first} vs {second} ({title}) | {marker(STUDY, key + '.seed0_difference', sign)} | "
                         f"{marker(STUDY, key + '.mean_difference', sign)} {marker(STUDY, key + '.ci95', interval)} | "
                         f"{'yes' if pair['seeds_disagree_in_sign'] else 'no'} |")
    return "\n".join(lines) + "\n"


def real_study_schedules_table() -> str:
    """The F1-drop rule against plain schedules at the same 3-epoch budget."""
    lines = ["| schedule | test macro-F1 | seeds 0, 1, 2 |", "|---|---|---|"]
    for name, key in _cells("schedule"):
        title = {"F1-drop": "F1-drop (the study's, ferwild's default)"}.get(name, name)
        lines.append(f"| {title} | {marker(STUDY, key, 'pm1')} | {marker(STUDY, key, 'seeds1')} |")
    return "\n".join(lines) + "\n"


BLOCKS: dict[str, Callable[[], str]] = {
    "shipped_models": shipped_models_table, "live_fps": live_fps_table,
    "real_study_summary": real_study_summary_table, "real_study_ablations": real_study_ablations_table,
    "real_study_leakage": real_study_leakage_table, "real_study_copies": real_study_copies_table,
    "real_study_selection": real_study_selection_table, "real_study_single_seed": real_study_single_seed_table,
    "real_study_schedules": real_study_schedules_table,
}


# --- rendering and checking ----------------------------------------------------------------------

def render(text: str) -> tuple[str, list[str]]:
    """``text`` with every marked figure and generated table written from its source, and the
    problems met (a key no source holds, an unknown block)."""
    problems: list[str] = malformed(text)

    def block(m: re.Match) -> str:
        name = m["name"]
        if name not in BLOCKS:
            problems.append(f"unknown table figures:{name}")
            return m[0]
        try:
            body = BLOCKS[name]()
        except KeyError as e:
            problems.append(f"figures:{name}: {e}")
            return m[0]
        return f"<!-- figures:{name} -->\n{body}<!-- /figures:{name} -->"

    def fig(m: re.Match) -> str:
        try:
            return marker(m["source"], m["key"], m["fmt"])
        except KeyError as e:
            problems.append(str(e).strip("\"'"))
            return m[0]

    text = BLOCK.sub(block, text)
    # figures inside generated tables are rewritten with them; the rest one by one
    return FIG.sub(fig, text), problems


# the start of any figure marker: one that FIG cannot read (a key with a space, no format) would
# otherwise be skipped silently, its text never checked
FIG_OPENING = re.compile(r"<!-- fig \w+:(?:(?!-->).)*-->", re.S)


def malformed(text: str) -> list[str]:
    """The figure markers of ``text`` that FIG does not read (``<!-- fig SOURCE KEY FORMAT -->``,
    no spaces inside the key)."""
    good = {m.start() for m in FIG.finditer(text)}
    return [f"malformed figure marker {m[0]!r} (write <!-- fig SOURCE KEY FORMAT -->, a key without spaces)"
            for m in FIG_OPENING.finditer(text) if m.start() not in good]


def stale(text: str) -> list[str]:
    """Each marked figure or generated table of ``text`` that differs from its source, or that no
    source holds, or a figure marker that cannot be read, as ``what: page says X, source says Y``."""
    out = malformed(text)
    for m in BLOCK.finditer(text):
        if m["name"] not in BLOCKS:
            out.append(f"unknown table figures:{m['name']}")
            continue
        try:
            if m["text"] != BLOCKS[m["name"]]():
                out.append(f"table figures:{m['name']} differs from its sources")
        except KeyError as e:
            out.append(f"figures:{m['name']}: {e}")
    for m in FIG.finditer(text):
        try:
            want = figure(m["source"], m["key"], m["fmt"])
        except KeyError as e:
            out.append(str(e).strip("\"'"))
            continue
        if m["text"] != want:
            out.append(f"{m['source']} {m['key']}: page says {m['text']!r}, source says {want!r}")
    return out


# a figure in one format is the same figure in another: a copy typed in any of these is caught
VARIANTS = {"pct": ("pct1", "pct2"), "pts": ("pct1", "pct2", "pts1", "pts2"), "f": ("f1", "f2")}


def published(text: str) -> set[str]:
    """The figure strings ``text`` publishes through markers, each also in the other formats a
    reader might retype it in (82.8% is also 82.80%); only strings with a decimal point or a %
    sign, the ones that identify a figure."""
    out = set()
    for m in FIG.finditer(text):
        strings = {m["text"]}
        family, digits = re.fullmatch(r"(.*?)(\d*)", m["fmt"]).groups()
        # a whole-number figure (88%) gets no more precise variant: its one-decimal forms (88.1%)
        # are, far more often, other measurements that round alike than retypings of it
        for fmt in VARIANTS.get(family, ()) if digits not in ("", "0") else ():
            try:
                strings.add(figure(m["source"], m["key"], fmt))
            except (KeyError, TypeError, ValueError):
                pass
        # shorter strings (1.2%) turn up by chance as other quantities
        out |= {s for s in strings if re.search(r"\d\.\d|\d%", s) and len(s) >= 5}
    return out


def unmarked(text: str) -> str:
    """``text`` without its markers' content, quoted outside figures and generated tables: the
    hand-typed prose."""
    return UNKEPT.sub(" ", EXT.sub(" ", FIG.sub(" ", BLOCK.sub(" ", text))))


def unkept(text: str) -> list[str]:
    """The runs named by ``<!-- unkept RUN -->`` markers in ``text``, one entry per figure."""
    return [m["run"] for m in UNKEPT.finditer(text)]


def hand_written_pages(pages: dict[str, str]) -> dict[str, str]:
    """The pages written by hand (every page but the model cards, which are rendered whole)."""
    return {name: text for name, text in pages.items() if name not in CARD_PAGES}


def unsourced_percentages(text: str) -> list[str]:
    """Percentages with a decimal (82.8%) in ``text``'s hand-typed prose: figures that neither
    come from a source nor say where they were quoted from."""
    return re.findall(r"(?<![\d.])\d+\.\d+%", unmarked(text))


def unsourced_rates(text: str) -> list[str]:
    """Decimal ratios (1.57x) and rates (241.5 faces/s, 2.5 ms, 930.2 MB) in ``text``'s hand-typed
    prose: benchmark figures that come from no kept file."""
    return re.findall(r"(?<![\d.])\d+\.\d+(?:x\b| (?:frames/s|faces/s|photos/s|img/s|ms|MB)\b)", unmarked(text))


def hand_typed_copies(pages: dict[str, str]) -> list[str]:
    """Each place where a figure some marker publishes is typed again without a marker, in a page
    not rendered whole from a card (those are checked by re-rendering)."""
    figures: set[str] = set()
    for text in pages.values():
        figures |= published(text)
    out = []
    for name, text in pages.items():
        if name in CARD_PAGES:
            continue
        prose = unmarked(text)
        for fig_text in sorted(figures):
            pattern = rf"(?<![\d.+-]){re.escape(fig_text)}(?![\d])"
            for m in re.finditer(pattern, prose):
                line = prose.count("\n", 0, m.start()) + 1
                out.append(f"{name}:{line}: {fig_text!r} typed by hand (mark it with its source)")
    return out


# the pages rendered whole from a card.json by recipes/render_model_cards.py
CARD_PAGES = ("MODEL_CARD.md", "docs/model_card_fer2013_vgg.md", "docs/model_card_ferplus_live.md",
              "docs/model_card_ferplus_ensemble.md")


def stale_cards() -> list[str]:
    """The model card pages that differ from what their card.json renders."""
    from ferwild.model_cards import rendered_pages

    return [str(p.relative_to(REPO)) for p, text in rendered_pages(REPO).items()
            if not p.is_file() or p.read_text(encoding="utf-8") != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="Write nothing; exit 1 when a figure is stale.")
    args = parser.parse_args(argv)
    failed = False
    for path in documents():
        text = path.read_text(encoding="utf-8")
        name = path.relative_to(REPO)
        if args.check:
            for problem in stale(text):
                print(f"{name}: {problem}")
                failed = True
            continue
        new, problems = render(text)
        for problem in problems:
            print(f"{name}: {problem}")
            failed = True
        if new != text:
            path.write_text(new, encoding="utf-8")
            print(f"rewrote figures in {name}")
    if args.check:
        pages = {str(p.relative_to(REPO)): p.read_text(encoding="utf-8") for p in documents()}
        unsourced = [f"{name}: {v!r} has no source (mark it, or quote it with <!-- ext WHERE -->)"
                     for name, text in hand_written_pages(pages).items()
                     for v in unsourced_percentages(text) + unsourced_rates(text)]
        for problem in hand_typed_copies(pages) + unsourced:
            print(problem)
            failed = True
        for name, text in hand_written_pages(pages).items():
            runs = unkept(text)
            if runs:
                print(f"{name}: {len(runs)} figures from runs whose output was not kept: "
                      + "; ".join(sorted(set(runs))))
        for page in stale_cards():
            print(f"{page}: differs from its card.json (run python recipes/render_model_cards.py)")
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
