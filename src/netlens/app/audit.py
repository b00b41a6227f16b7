"""The audit: every attribution method scored by every metric, as one web page and a JSON file.

:func:`run_audit` computes each method's maps of the given images (every
method of :data:`netlens.attribution.METHODS` and the :class:`RandomMap`
baseline, unless told otherwise) and scores them with every metric of
:mod:`netlens.metrics`: deletion, insertion, average drop, increase in
confidence, ROAD and the model randomisation test, each with a seeded
bootstrap 95% interval. It writes a table of the scores with their
intervals, the curves behind them and the maps, as ``index.html`` next to
the PNG files it shows, and every number in ``results.json``. This is what
``netlens audit`` runs; without a model of yours it audits the tour's digit
classifier (:mod:`netlens.app.tour`), trained first.

The audit writes the files named in :data:`FIGURES`, :data:`INDEX` and
:data:`RESULTS` and nothing else.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from netlens.app.arguments import integer_at_least
from netlens.app.files import shown
from netlens.app.tour_page import html_figure, html_page
from netlens.attribution import METHODS
from netlens.attribution.base import Attribution, Targets
from netlens.errors import NetlensError
from netlens.metrics import (
    MetricResult,
    RandomizationResult,
    RandomMap,
    average_drop,
    deletion,
    increase_in_confidence,
    insertion,
    model_randomization,
    road,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "DEFAULT",
    "FIGURES",
    "INDEX",
    "QUICK",
    "RANDOM",
    "RESULTS",
    "AuditSettings",
    "add_audit_parser",
    "audit_main",
    "digits_network",
    "run_audit",
]

#: The pictures the audit writes, in the order the page shows them.
FIGURES: tuple[str, ...] = (
    "scores.png",
    "curves.png",
    "road.png",
    "randomization.png",
    "cascade.png",
    "maps.png",
)
#: The page, and the file with every number.
INDEX = "index.html"
RESULTS = "results.json"
#: The name of the :class:`~netlens.metrics.RandomMap` baseline among the methods.
RANDOM = "random"
#: Methods whose randomisation cascade ``cascade.png`` shows, when audited.
CASCADE_METHODS: tuple[str, ...] = ("gradcam", "saliency", "guidedbackprop", RANDOM)

#: The metrics of the table, in its order: key, heading, whether higher is better.
COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("deletion", "Deletion", False),
    ("insertion", "Insertion", True),
    ("average_drop", "Average drop", False),
    ("increase_in_confidence", "Increase in confidence", True),
    ("road", "ROAD", True),
    ("randomization_top", "Rank correlation, top block random", False),
    ("randomization_all", "Rank correlation, all blocks random", False),
)


@dataclass(frozen=True)
class AuditSettings:
    """How much work the audit does.

    Attributes
    ----------
    images
        Images scored (the first this many given).
    steps
        Steps of deletion and insertion.
    substrate
        What deletion and insertion put in place of pixels (see
        :func:`netlens.metrics.deletion`); the same for both, so that the two
        curves are mirror images.
    percentiles
        ROAD's percentages of pixels removed.
    randomization_images
        Images of the model randomisation test (the first this many).
    shown_images
        Images whose maps ``maps.png`` shows.
    epochs, width, train_images
        The digit classifier trained when no model is given (see
        :func:`digits_network`): epochs, channels of its first stage, and the
        training digits used (``None``: all 1,347).
    """

    images: int = 48
    steps: int = 12
    substrate: str = "blur"
    percentiles: tuple[float, ...] = (10, 30, 50, 70, 90)
    randomization_images: int = 8
    shown_images: int = 4
    epochs: int = 3
    width: int = 16
    train_images: int | None = None


#: The settings of ``netlens audit``: a few minutes on two CPU cores for the digit classifier.
DEFAULT = AuditSettings()

#: Settings of seconds, for trying the audit out and for tests; the network learns little.
QUICK = AuditSettings(
    images=8,
    steps=4,
    percentiles=(30, 70),
    randomization_images=4,
    shown_images=2,
    epochs=1,
    width=4,
    train_images=160,
)


@dataclass
class _MethodAudit:
    name: str
    title: str
    scores: dict[str, MetricResult] = field(default_factory=dict)
    randomization: RandomizationResult | None = None
    errors: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    maps: Tensor | None = None


def run_audit(
    model: nn.Module,
    images: Tensor,
    targets: object = None,
    *,
    methods: Sequence[str] | None = None,
    out_dir: str | Path,
    class_names: Sequence[str] | None = None,
    progress: bool = True,
    seed: int = 0,
    settings: AuditSettings = DEFAULT,
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
    description: str | None = None,
) -> Path:
    """Score every method's maps of ``images`` with every metric; write the page and the JSON.

    Parameters
    ----------
    model
        The classifier, returning logits ``(N, num_classes)``; left as found.
    images
        ``(N, C, H, W)`` as the model takes them; the first
        ``settings.images`` are used.
    targets
        The class of each image: ``None`` (the model's top-1), an ``int`` or
        one per image.
    methods
        Names of :data:`~netlens.attribution.METHODS`, and ``"random"`` for
        the :class:`~netlens.metrics.RandomMap` baseline; default: all of
        them. A method that does not apply to the model (CAM without global
        average pooling) is listed as not measured, with the reason.
    out_dir
        Folder for :data:`INDEX`, :data:`RESULTS` and :data:`FIGURES`; made if
        missing. Other files in it are left alone.
    class_names
        Names of the classes, for the pictures.
    progress
        Print what is being done and show a progress bar.
    seed
        Seeds ties, ROAD's noise, the randomised weights and the intervals.
    settings
        How much work to do (:data:`DEFAULT`, :data:`QUICK`).
    mean, std
        How the images were normalised, to show them.
    description
        One sentence about the model and images for the page.

    Returns
    -------
    Path
        The page, ``out_dir / INDEX``.

    Examples
    --------
    >>> import tempfile, torch
    >>> from netlens.models import SmallResNet
    >>> page = run_audit(SmallResNet(width=4).eval(), torch.rand(8, 1, 32, 32),
    ...                  methods=["gradcam", "random"], out_dir=tempfile.mkdtemp(),
    ...                  settings=QUICK, progress=False)  # doctest: +SKIP
    >>> page.name  # doctest: +SKIP
    'index.html'
    """
    start = time.perf_counter()
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, not {type(model).__name__}")
    if not isinstance(images, Tensor) or images.dim() != 4 or not images.is_floating_point():
        raise ValueError("images must be a floating-point tensor (N, C, H, W)")
    names = _method_names(methods)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(
            f"{shown(out)} exists and is not a folder; choose another output folder"
        )
    x = images[: settings.images].detach()
    if len(x) < 2:
        raise ValueError("the audit needs at least 2 images for its intervals")
    say: Callable[[str], None] = tqdm.write if progress else (lambda _: None)
    with torch.no_grad():
        logits = _logits(model, x)
    classes = Targets.parse(targets, len(x)).resolve(logits)
    if classes.shape[1] != 1:
        raise ValueError("the audit explains one class per image")
    classes = classes[:, 0]
    out.mkdir(parents=True, exist_ok=True)

    say(f"auditing {len(names)} methods on {len(x)} images")
    audits = []
    bar = tqdm(names, desc="audit", unit="method", disable=not progress)
    for name in bar:
        bar.set_postfix_str(name)
        audits.append(_audit_method(name, model, x, classes, settings, seed))
    seconds = time.perf_counter() - start
    summary = description or f"{type(model).__name__} on {len(x)} images"
    settings_text = _settings_text(settings, x, seed, seconds, audits)
    figures = _figures(audits, x, classes, class_names, settings, mean, std)
    for figure_name, draw in tqdm(
        figures.items(), desc="figures", unit="figure", disable=not progress
    ):
        draw().savefig(out / figure_name, dpi=100)
    _write_results(out / RESULTS, audits, classes, settings, seed, seconds, summary)
    page = out / INDEX
    page.write_text(_render(audits, summary, settings_text), encoding="utf-8")
    return page


def _logits(model: nn.Module, x: Tensor) -> Tensor:
    from netlens.hooks import as_logits, eval_mode

    with eval_mode(model):
        return as_logits(model(x))


def _method_names(methods: Sequence[str] | None) -> list[str]:
    known = [*METHODS, RANDOM]
    if methods is None:
        return known
    if isinstance(methods, str) or not methods:
        raise ValueError("methods must be a non-empty list of method names")
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; known: {', '.join(known)}")
    return list(dict.fromkeys(methods))


def _builder(name: str) -> type[Attribution]:
    return RandomMap if name == RANDOM and RANDOM not in METHODS else METHODS[name]


def _audit_method(
    name: str,
    model: nn.Module,
    x: Tensor,
    classes: Tensor,
    settings: AuditSettings,
    seed: int,
) -> _MethodAudit:
    cls = _builder(name)
    audit = _MethodAudit(name, cls.title)
    start = time.perf_counter()
    try:
        maps = cls(model)(x, classes).detach()
    except _REPORTED as error:
        audit.errors["maps"] = _reason(error)
        return audit
    audit.maps = maps[: settings.shown_images].cpu()
    runs: dict[str, Callable[[Tensor, Tensor, Tensor], MetricResult]] = {
        "deletion": lambda xs, ms, cs: deletion(
            model, xs, ms, cs, steps=settings.steps, substrate=settings.substrate, seed=seed
        ),
        "insertion": lambda xs, ms, cs: insertion(
            model, xs, ms, cs, steps=settings.steps, substrate=settings.substrate, seed=seed
        ),
        "average_drop": lambda xs, ms, cs: average_drop(model, xs, ms, cs, seed=seed),
        "increase_in_confidence": lambda xs, ms, cs: increase_in_confidence(
            model, xs, ms, cs, seed=seed
        ),
        "road": lambda xs, ms, cs: road(
            model, xs, ms, cs, percentiles=settings.percentiles, seed=seed
        ),
    }
    for metric, run in runs.items():
        try:
            if metric in ("average_drop", "increase_in_confidence"):
                audit.scores[metric] = _on_scalable_maps(metric, run, x, maps, classes, seed)
            else:
                audit.scores[metric] = run(x, maps, classes)
        except _REPORTED as error:
            audit.errors[metric] = _reason(error)
    count = settings.randomization_images
    try:
        audit.randomization = model_randomization(
            model, x[:count], cls, classes[:count], seed=seed, keep_maps=name in CASCADE_METHODS
        )
    except _REPORTED as error:
        audit.errors["randomization"] = _reason(error)
    audit.seconds = time.perf_counter() - start
    return audit


# What a method or a metric may raise on a model it does not apply to: reported, not fatal.
_REPORTED = (NetlensError, ValueError, TypeError, RuntimeError)


def _on_scalable_maps(
    metric: str,
    run: Callable[[Tensor, Tensor, Tensor], MetricResult],
    x: Tensor,
    maps: Tensor,
    classes: Tensor,
    seed: int,
) -> MetricResult:
    """A metric that scales each map to [0, 1], on the maps that are not constant.

    The others have no value (NaN, counted in ``undefined``), never a made-up one.
    """
    flat = maps.flatten(1)
    varies = (flat.amax(1) > flat.amin(1)).cpu()
    if bool(varies.all()):
        return run(x, maps, classes)
    values = np.full(len(x), math.nan)
    rows = varies.nonzero()[:, 0]
    if len(rows):
        part = run(
            x[rows.to(x.device)], maps[rows.to(maps.device)], classes[rows.to(classes.device)]
        )
        values[rows.numpy()] = part.values
    higher = dict((k, h) for k, _, h in COLUMNS)[metric]
    return MetricResult.of(metric, values, higher_is_better=higher, seed=seed)


def _reason(error: Exception) -> str:
    return " ".join(str(error).split()) or type(error).__name__


# the numbers -------------------------------------------------------------------


def _cell(audit: _MethodAudit, key: str) -> MetricResult | None:
    if key.startswith("randomization"):
        found = audit.randomization
        if found is None or not found.blocks:
            return None
        return found.spearman_abs[0 if key == "randomization_top" else -1]
    return audit.scores.get(key)


def _beats(result: MetricResult, chance: MetricResult | None) -> bool:
    if chance is None or result is chance:
        return False
    low, high = result.interval
    c_low, c_high = chance.interval
    if any(math.isnan(v) for v in (low, high)):
        return False
    if result.higher_is_better:
        return low > c_high if not math.isnan(c_high) else low > chance.mean
    return high < c_low if not math.isnan(c_low) else high < chance.mean


def _text(result: MetricResult | None) -> str:
    if result is None:
        return "n/a"
    low, high = result.interval
    undefined = f"; {result.undefined} undefined" if result.undefined else ""
    return f"{result.mean:.3f} [{low:.3f}, {high:.3f}]{undefined}"


def _settings_text(
    settings: AuditSettings, x: Tensor, seed: int, seconds: float, audits: list[_MethodAudit]
) -> str:
    blocks = next((a.randomization.blocks for a in audits if a.randomization), ())
    percentiles = ", ".join(f"{p:g}" for p in settings.percentiles)
    return (
        f"{len(x)} images of {x.shape[-2]}x{x.shape[-1]} pixels, each explained for one class; "
        f"deletion and insertion in {settings.steps} steps with the '{settings.substrate}' "
        f"substrate; ROAD at {percentiles}% of the pixels removed; the randomisation test on "
        f"the first {min(settings.randomization_images, len(x))} images, blocks randomised "
        f"from the top: {', '.join(blocks) or 'none'}. Intervals: seeded bootstrap 95% of the "
        f"mean over images (seed {seed}). Made in {seconds:.0f} s."
    )


def _write_results(
    path: Path,
    audits: list[_MethodAudit],
    classes: Tensor,
    settings: AuditSettings,
    seed: int,
    seconds: float,
    summary: str,
) -> None:
    found = {
        "description": summary,
        "settings": {**asdict(settings), "seed": seed},
        "seconds": seconds,
        "classes": classes.tolist(),
        "methods": {
            a.name: {
                "title": a.title,
                "seconds": a.seconds,
                "metrics": {k: v.to_dict() for k, v in a.scores.items()},
                "randomization": a.randomization.to_dict() if a.randomization else None,
                "errors": a.errors,
            }
            for a in audits
        },
    }
    path.write_text(json.dumps(_plain(found), indent=1, allow_nan=False), encoding="utf-8")


def _plain(value: object) -> object:
    """JSON-ready: NaN and infinities become ``None``, tuples lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return _plain(value.item())
    return value


# the page ----------------------------------------------------------------------

_CAPTIONS = {
    "scores.png": "Every score with its 95% interval; the dashed line is the random baseline "
    "(chance). Arrows say which way is better.",
    "curves.png": "Deletion and insertion: mean class probability over the images as the "
    "most relevant pixels (by each method's map) are replaced / restored.",
    "road.png": "ROAD: mean class probability after removing the most (MoRF) or least (LeRF) "
    "relevant pixels, filled in by noisy linear imputation.",
    "randomization.png": "Model randomisation: similarity of each method's maps to its maps "
    "of the trained model, as blocks are randomised from the top. A map that explains the "
    "model falls towards 0; one that stays high shows something the weights did not learn.",
    "cascade.png": "One image's maps as the blocks are randomised in turn, left to right.",
    "maps.png": "The maps of the first images, for the class the scores are about.",
}


def _render(audits: list[_MethodAudit], summary: str, settings_text: str) -> str:
    chance = next((a for a in audits if a.name == RANDOM), None)
    heads = "".join(
        f"<th>{html.escape(label)} {'&uarr;' if higher else '&darr;'}</th>"
        for _, label, higher in COLUMNS
    )
    rows = []
    for audit in audits:
        cells = []
        for key, _, _ in COLUMNS:
            result = _cell(audit, key)
            baseline = _cell(chance, key) if chance is not None else None
            better = result is not None and baseline is not None and _beats(result, baseline)
            css = ' class="value beats"' if better else ' class="value"'
            error = audit.errors.get(key.split("_")[0] if key.startswith("randomization") else key)
            title = f' title="{html.escape(error)}"' if error else ""
            cells.append(
                f'<td{css} data-method="{html.escape(audit.name)}" data-metric="{key}"{title}>'
                f"{html.escape(_text(result))}</td>"
            )
        rows.append(f"<tr><th>{html.escape(audit.title)}</th>{''.join(cells)}</tr>")
    missing = [
        f"<li>{html.escape(a.title)}: {html.escape(what)}: {html.escape(why)}</li>"
        for a in audits
        for what, why in a.errors.items()
    ]
    not_measured = f"<h3>Not measured</h3><ul>{''.join(missing)}</ul>" if missing else ""
    figures = "\n".join(html_figure(name, caption) for name, caption in _CAPTIONS.items())
    body = f"""<h1>netlens audit: which attribution map can be trusted here?</h1>
<p>{html.escape(summary)}. Every method's maps scored by faithfulness metrics and the model
randomisation sanity check. A number in green is better than the random baseline's with
95% intervals that do not overlap.</p>
<p>{html.escape(settings_text)}</p>
<h2>Scores</h2>
<table>
<tr><th>Method</th>{heads}</tr>
{chr(10).join(rows)}
</table>
{not_measured}
<h2>Pictures</h2>
{figures}"""
    return html_page("netlens audit", body, style=_AUDIT_STYLE)


_AUDIT_STYLE = """
th { text-align: left; padding: 0.25em 0.8em; border-bottom: 1px solid #ddd; }
td.beats { color: #176117; }
"""


# the pictures ------------------------------------------------------------------


def _figures(
    audits: list[_MethodAudit],
    x: Tensor,
    classes: Tensor,
    class_names: Sequence[str] | None,
    settings: AuditSettings,
    mean: Sequence[float] | float | None,
    std: Sequence[float] | float | None,
) -> dict[str, Callable[[], Figure]]:
    measured = [a for a in audits if a.scores]
    figures: dict[str, Callable[[], Figure]] = {
        "scores.png": lambda: _scores_figure(audits),
        "curves.png": lambda: _curves_figure(measured, ("deletion", "insertion")),
        "road.png": lambda: _road_figure(measured),
        "randomization.png": lambda: _randomization_figure(audits),
        "cascade.png": lambda: _cascade_figure(audits, x, mean, std),
        "maps.png": lambda: _maps_figure(audits, x, classes, class_names, settings, mean, std),
    }
    assert tuple(figures) == FIGURES
    return figures


def _style(audit: _MethodAudit, audits: list[_MethodAudit]) -> dict[str, object]:
    """A line style per method: a colour of its own, the random baseline dashed black."""
    if audit.name == RANDOM:
        return {"color": "black", "linestyle": "--", "linewidth": 2}
    from matplotlib import colormaps

    index = [a.name for a in audits].index(audit.name)
    return {"color": colormaps["tab20"](index % 20)}


def _scores_figure(audits: list[_MethodAudit]) -> Figure:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(16, 0.32 * len(audits) + 1.6), layout="constrained")
    axes = figure.subplots(1, len(COLUMNS), sharey=True)
    titles = [a.title for a in audits]
    for ax, (key, label, higher) in zip(axes, COLUMNS, strict=True):
        for row, audit in enumerate(audits):
            result = _cell(audit, key)
            if result is None or math.isnan(result.mean):
                continue
            low, high = result.interval
            ax.plot([low, high], [row, row], color="tab:blue", linewidth=2)
            ax.plot(
                [result.mean], [row], "o", color="black" if audit.name == RANDOM else "tab:blue"
            )
            if audit.name == RANDOM:
                ax.axvline(result.mean, color="gray", linestyle="--", linewidth=1)
        ax.set_title(f"{label}\n({'higher' if higher else 'lower'} is better)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(audits)), titles, fontsize=8)
    axes[0].invert_yaxis()
    return figure


def _curves_figure(audits: list[_MethodAudit], keys: tuple[str, str]) -> Figure:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(12, 4.6), layout="constrained")
    axes = figure.subplots(1, 2)
    for ax, key in zip(axes, keys, strict=True):
        for audit in audits:
            result = audit.scores.get(key)
            if result is None or result.curves is None or result.x is None:
                continue
            ax.plot(
                result.x, np.nanmean(result.curves, 0), label=audit.title, **_style(audit, audits)
            )
        what = "removed" if key == "deletion" else "restored"
        ax.set(
            title=f"{key} ({'lower' if key == 'deletion' else 'higher'} area is better)",
            xlabel=f"fraction of pixels {what}",
            ylabel="class probability",
            ylim=(0, 1.02),
        )
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, ncol=2, loc="lower right")
    return figure


def _road_figure(audits: list[_MethodAudit]) -> Figure:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(12, 4.6), layout="constrained")
    axes = figure.subplots(1, 2)
    for ax, order, better in zip(axes, ("morf", "lerf"), ("lower", "higher"), strict=True):
        for audit in audits:
            result = audit.scores.get("road")
            part = result.parts.get(order) if result is not None else None
            if part is None or part.curves is None or part.x is None:
                continue
            ax.plot(
                part.x,
                np.nanmean(part.curves, 0),
                marker="o",
                label=audit.title,
                **_style(audit, audits),
            )
        name = "most relevant first" if order == "morf" else "least relevant first"
        ax.set(
            title=f"ROAD, {name} ({better} is better)",
            xlabel="% of pixels removed and imputed",
            ylabel="class probability",
            ylim=(0, 1.02),
        )
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, ncol=2, loc="lower left")
    return figure


def _randomization_figure(audits: list[_MethodAudit]) -> Figure:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(12, 4.8), layout="constrained")
    axes = figure.subplots(1, 2)
    found = [a for a in audits if a.randomization is not None]
    for ax, key, label in zip(
        axes, ("spearman_abs", "ssim"), ("Spearman rank correlation (|map|)", "SSIM"), strict=True
    ):
        for audit in found:
            assert audit.randomization is not None
            results = getattr(audit.randomization, key)
            means = [1.0, *(r.mean for r in results)]
            ax.plot(
                range(len(means)), means, marker="o", label=audit.title, **_style(audit, audits)
            )
        if found:
            assert found[0].randomization is not None
            blocks = ["trained", *found[0].randomization.blocks]
            ax.set_xticks(range(len(blocks)), blocks, rotation=45, ha="right", fontsize=8)
        ax.set(
            title=f"{label} with the trained model's maps",
            xlabel="randomised down to",
            ylim=(-0.3, 1.05),
        )
        ax.axhline(0, color="gray", linewidth=0.8)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, ncol=2, loc="upper right")
    return figure


def _cascade_figure(
    audits: list[_MethodAudit],
    x: Tensor,
    mean: Sequence[float] | float | None,
    std: Sequence[float] | float | None,
) -> Figure:
    from matplotlib.figure import Figure

    from netlens import viz

    shown_audits = [
        a for a in audits if a.randomization is not None and a.randomization.maps is not None
    ]
    if not shown_audits:
        figure = Figure(figsize=(6, 1.5))
        figure.text(0.5, 0.5, "no randomisation cascade to show", ha="center", va="center")
        return figure
    first = shown_audits[0].randomization
    assert first is not None
    columns = 1 + len(first.blocks)
    figure = Figure(
        figsize=(1.5 * (columns + 1), 1.6 * len(shown_audits) + 0.5), layout="constrained"
    )
    axes = figure.subplots(len(shown_audits), columns + 1, squeeze=False)
    picture = viz.to_image(x[0].cpu(), mean=mean, std=std)
    for row, audit in enumerate(shown_audits):
        assert audit.randomization is not None and audit.randomization.maps is not None
        axes[row, 0].imshow(picture)
        axes[row, 0].set_ylabel(audit.title, fontsize=8)
        for column, maps in enumerate(audit.randomization.maps[:, 0], start=1):
            axes[row, column].imshow(viz.blend(picture, maps))
            if row == 0:
                label = "trained" if column == 1 else f"to {first.blocks[column - 2]}"
                axes[row, column].set_title(label, fontsize=8)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_title("image", fontsize=8)
    return figure


def _maps_figure(
    audits: list[_MethodAudit],
    x: Tensor,
    classes: Tensor,
    class_names: Sequence[str] | None,
    settings: AuditSettings,
    mean: Sequence[float] | float | None,
    std: Sequence[float] | float | None,
) -> Figure:
    from matplotlib.figure import Figure

    from netlens import viz

    maps = {a.title: a.maps for a in audits if a.maps is not None}
    count = min(settings.shown_images, len(x))
    figure = Figure(figsize=(1.35 * (1 + len(maps)), 1.45 * count + 0.4), layout="constrained")
    if not maps:
        figure.text(0.5, 0.5, "no maps", ha="center", va="center")
        return figure
    titles = [
        class_names[int(c)]
        if class_names is not None and int(c) < len(class_names)
        else f"class {int(c)}"
        for c in classes[:count]
    ]
    viz.attribution_grid(
        x[:count].cpu(),
        {k: v[:count] for k, v in maps.items()},
        titles=titles,
        mean=mean,
        std=std,
        fig=figure,
    )
    for ax in figure.axes:
        ax.title.set_fontsize(7)
    return figure


# the digit classifier ----------------------------------------------------------


def digits_network(
    settings: AuditSettings = DEFAULT,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> tuple[nn.Module, Tensor, Tensor]:
    """The tour's digit classifier, trained: the model, the test digits and their labels.

    :class:`~netlens.models.SmallResNet` on scikit-learn's digits at the
    tour's size (:data:`netlens.app.tour.IMAGE_SIZE`), trained for
    ``settings.epochs`` (the tour's budget by default) with ``seed``.
    """
    from netlens.app.tour import IMAGE_SIZE
    from netlens.datasets import DIGIT_CLASSES, load_digits
    from netlens.models import SmallResNet, train_classifier

    train, test = load_digits(IMAGE_SIZE, seed=seed)
    train = train.first(settings.train_images)
    torch.manual_seed(seed)
    model = SmallResNet(len(DIGIT_CLASSES), 1, settings.width).to(device)
    train_classifier(model, train, test, epochs=settings.epochs, seed=seed, progress=progress)
    return model.eval(), test.images.to(device), test.labels


# the command -------------------------------------------------------------------

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}


def add_audit_parser(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``netlens audit`` to the command's subcommands."""
    audit = commands.add_parser(
        "audit",
        parents=[common],
        help="score every attribution method with faithfulness metrics and sanity checks, "
        "write index.html and results.json",
        description="Compute every attribution method's maps of some images and score them "
        "with deletion, insertion, average drop, increase in confidence, ROAD and the model "
        "randomisation test, each with a 95% bootstrap interval, next to a random map "
        "(chance). Writes a table, curves and maps as index.html with PNG files, and every "
        "number in results.json. Without --arch, audits the tour's digit classifier "
        "(trained first, offline).",
    )
    audit.add_argument("--arch", help="torchvision architecture, e.g. resnet18 (needs --images)")
    audit.add_argument(
        "--weights",
        default="DEFAULT",
        help="with --arch: DEFAULT (torchvision's pretrained weights, downloaded once), another "
        "weights name, or the path of a state dict (default: %(default)s)",
    )
    audit.add_argument("--images", type=Path, help="with --arch: a folder of image files")
    audit.add_argument(
        "--classes",
        type=Path,
        metavar="FILE",
        help="with --arch: class names, one per line in class order",
    )
    audit.add_argument(
        "--methods",
        help=f"comma-separated method names (default: all, and {RANDOM}): "
        + ", ".join([*METHODS, RANDOM]),
    )
    audit.add_argument(
        "--count",
        type=integer_at_least(2, "images"),
        help=f"images to score (default: {DEFAULT.images})",
    )
    audit.add_argument(
        "--out", default="netlens-audit", type=Path, help="folder to write (default: %(default)s)"
    )
    audit.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="default: cpu")
    audit.add_argument(
        "--seed", default=0, type=int, help="seed of training, ties, noise, intervals"
    )
    audit.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)
    audit.set_defaults(run=audit_main, parser=audit)


def audit_main(args: argparse.Namespace) -> int:
    """Run ``netlens audit`` with parsed arguments; the exit status (0, 1 or 2)."""
    import sys

    from netlens.app import cli

    parser = getattr(args, "parser", None)
    usage = None
    if args.arch is None and (
        args.images is not None or args.weights != "DEFAULT" or args.classes is not None
    ):
        usage = (
            "--images, --weights and --classes go with --arch (without it the digit "
            "classifier is audited)"
        )
    elif args.arch is not None and args.images is None:
        usage = "--arch needs --images, a folder of image files to audit the model on"
    if usage is not None:
        prog = parser.prog if parser is not None else "netlens audit"
        cli._say(f"netlens: error: {usage} (see '{prog} --help')", sys.stderr)
        return 2
    methods = None
    if args.methods:
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        _method_names(methods)  # unknown names fail before any work
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise cli.CommandError("CUDA is not available on this machine; use --device cpu")
    settings = QUICK if args.quick else DEFAULT
    if args.count is not None:
        settings = AuditSettings(**{**asdict(settings), "images": args.count})
    out = args.out
    if out.exists() and not out.is_dir():
        raise cli.CommandError(
            f"{shown(out)} exists and is not a folder; choose another output folder"
        )
    threads = torch.get_num_threads()
    try:
        if args.arch is None:
            # As in the tour: the network is small, and waiting OpenMP threads cost more.
            if device.type == "cpu":
                torch.set_num_threads(1)
            model, images, class_names, mean, std, summary = _digits(settings, args, device)
        else:
            model, images, class_names, mean, std, summary = _torchvision(settings, args, device)
        page = run_audit(
            model,
            images,
            methods=methods,
            out_dir=out,
            class_names=class_names,
            seed=args.seed,
            settings=settings,
            mean=mean,
            std=std,
            description=summary,
        )
    finally:
        torch.set_num_threads(threads)
    results = json.loads((page.parent / RESULTS).read_text(encoding="utf-8"))
    for found in results["methods"].values():
        scores = found["metrics"]
        parts = [
            f"{key} {scores[key]['mean']:.3f}"
            for key in ("deletion", "insertion", "road")
            if key in scores and scores[key]["mean"] is not None
        ]
        cli._say(f"{found['title']:<22} {', '.join(parts) or 'not measured'}")
    cli._say(f"{results['seconds']:.0f} s; index: {shown(page.resolve())}")
    return 0


def _digits(
    settings: AuditSettings, args: argparse.Namespace, device: torch.device
) -> tuple[nn.Module, Tensor, list[str], None, None, str]:
    from netlens.datasets import DIGIT_CLASSES

    tqdm.write(f"training the digit classifier ({settings.epochs} epochs)")
    model, images, _ = digits_network(settings, seed=args.seed, device=device)
    summary = (
        f"The tour's digit classifier (SmallResNet, width {settings.width}, "
        f"{settings.epochs} epochs, seed {args.seed}) on held-out handwritten digits"
    )
    return model, images, DIGIT_CLASSES, None, None, summary


def _torchvision(
    settings: AuditSettings, args: argparse.Namespace, device: torch.device
) -> tuple[nn.Module, Tensor, list[str], list[float], list[float], str]:
    from netlens.app import cli
    from netlens.app.files import prepare_image, read_image

    folder = args.images
    if not folder.is_dir():
        raise cli.CommandError(f"--images {shown(folder)} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    if len(files) < 2:
        raise cli.CommandError(
            f"{shown(folder)} holds {len(files)} image files; the audit needs at least 2"
        )
    files = files[: settings.images]
    resize, crop, mean, std = cli._preprocessing(args.arch)
    pictures = [
        prepare_image(read_image(f), resize=resize, crop=crop, name=shown(f)) for f in files
    ]
    model, categories, source = cli._model(args)  # --arch, --weights and --classes, as explain
    model = model.to(device).eval()
    m = torch.tensor(mean)[:, None, None]
    s = torch.tensor(std)[:, None, None]
    images = ((torch.stack(pictures) - m) / s).to(device)
    summary = f"{args.arch} ({source}) on {len(files)} images from {shown(folder)}"
    return model, images, list(categories), list(mean), list(std), summary
