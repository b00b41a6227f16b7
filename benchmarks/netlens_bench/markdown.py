"""The results as markdown: the header, the acceptance table, one table per configuration."""

from __future__ import annotations

from netlens_bench.report import RESOLUTION_MIB
from netlens_bench.runner import MANY_CLASSES, MANY_IMAGES, MANY_SECTION

COLUMNS = (
    "| method | library | time (ms) | / fastest peer | / forward | / fwd+bwd | peak (MiB) "
    "| / leanest peer | passes |"
)
ALIGN = "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"

#: (method, peer) pairs whose peer runs a batch as one call per image: its peak is that of one
#: image's pass, its time that of as many passes as images.
ONE_IMAGE_PER_CALL = {("guidedbackprop", "pytorch-grad-cam")}


def _fmt(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _bold_if(text: str, condition: bool) -> str:
    return f"**{text}**" if condition else text


def header(result: dict) -> list[str]:
    info = result["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v)
    title = f"{result['device']}, quick" if result["quick"] else result["device"]
    gpu = f"; GPU: {info['gpu']}" if "gpu" in info else ""
    return [
        f"# netlens benchmark ({title})",
        "",
        f"- date: {info['date']}; {result['cases']} cases, {result['seconds'] / 60:.1f} min",
        f"- CPU: {info['cpu']}, {info['logical_cpus']} logical CPUs, torch threads: "
        f"{info['torch_threads']}{gpu}",
        f"- load average at start / end: {info['load_average_at_start']} / "
        f"{info.get('load_average_at_end')}",
        f"- {versions}"
        + (
            f"; not installed, so not measured: {', '.join(result['skipped'])}"
            if result["skipped"]
            else ""
        ),
        "- torchvision models with random weights, eval mode, random images; layer methods on "
        "`layer4` (ResNets), `features.16` (MobileNetV3-Large), `features.7` (ConvNeXt-Tiny) "
        "in every library; one target class per image (the many-targets section aside)",
        *(
            f"- measured again in a later run ({again['date']}): "
            f"{'; '.join(again['configurations'])}, because {again['why']}"
            for again in result.get("retimed", [])
        ),
        f"- time: {result['timing_method']}",
        f"- peak: {result['memory_method']}",
        "- / fastest peer, / leanest peer: time and peak over those of the fastest and the "
        "leanest peer library for the same method on the same configuration; / forward, "
        "/ fwd+bwd: time over that of the bare forward pass (no grad) and of the forward pass "
        "with the backward pass to the input, on the same configuration, in the same run; no "
        f"peak is divided by one under {RESOLUTION_MIB:.0f} MiB",
        "- passes: images through the first convolution (the whole network) / through the last "
        "linear layer, in the first full call",
        "- methods that run many passes per image use the reduced parameters stated with them, "
        "at batch 1 on the cell and, for the cells of larger batches, on at most 4 images of "
        "half the side; Score-CAM and Ablation-CAM (a pass per channel of the layer) on ResNet-18, "
        "batch 1, half the side only"
        + (
            " (--quick: both kinds on ResNet-18 only, Score-CAM and Ablation-CAM at a quarter "
            "of the side)"
            if result["quick"]
            else ""
        ),
        "",
    ]


def acceptance(result: dict) -> list[str]:
    table = result["acceptance"]
    lines = ["## Acceptance", ""]
    if table["checks"]:
        lines += ["| check | measured | bound | result |", "| --- | ---: | ---: | --- |"]
        for row in table["checks"]:
            small = row["bound"] < 0.01
            measured = row["measured"]
            shown = "" if measured is None else f"{measured:.1e}" if small else f"{measured:.2f}"
            bound = f"{row['bound']:.0e}" if small else f"{row['bound']:.2f}"
            verdict = "**pass**" if row["pass"] else "**FAIL**"
            lines.append(f"| {row['check']} | {shown} | <= {bound} | {verdict} |")
        lines.append("")
    cells = table["cells"]
    slow = [c for c in cells if not c["time_pass"]]
    heavy = [c for c in cells if not c["peak_pass"]]
    lines += [
        f"Matrix cells with netlens and at least one peer: {len(cells)}; time <= 1.0 x the "
        f"fastest peer in {len(cells) - len(slow)}, peak <= 1.0 x the leanest peer in "
        f"{len(cells) - len(heavy)} (peaks within {RESOLUTION_MIB:.0f} MiB count as equal: "
        "below that the reading shows heap reuse rather than what the method needs).",
        "",
    ]
    failures = [c for c in cells if not (c["time_pass"] and c["peak_pass"])]
    if failures:
        lines += [
            "Failures (in bold):",
            "",
            "| method | configuration | time / fastest peer | rounds netlens faster "
            "| peak (MiB) | leanest peer (MiB) |",
            "| --- | --- | ---: | ---: | ---: | ---: |",
        ]
        for c in failures:
            time = _bold_if(f"{c['vs_fastest_peer']:.2f}", not c["time_pass"])
            peak = _bold_if(f"{c['peak_mib']:.1f}", not c["peak_pass"])
            rounds = c.get("rounds_faster")
            won = "" if rounds is None else f"{rounds[0]} of {rounds[1]}"
            lines.append(
                f"| {c['method']} | {c['label']} | {time} ({c['fastest_peer']}) | {won} | {peak} "
                f"| {c['leanest_peak_mib']:.1f} ({c['leanest_peer']}) |"
            )
        lines.append("")
        if any(c.get("rounds_faster") for c in failures):
            lines += [
                "Rounds netlens faster: in how many of the interleaved rounds netlens' call took "
                "less time than the fastest peer's call of the same round. Near half of the "
                "rounds, a ratio over 1.0 is within the machine's variation from call to call; "
                "none of the rounds, it is a difference.",
                "",
            ]
        looped = sorted(
            {(c["method"], c["leanest_peer"]) for c in failures if not c["peak_pass"]}
            & ONE_IMAGE_PER_CALL
        )
        for method, peer in looped:
            lines += [
                f"{peer}'s {method} takes one image per call, so a batch is a loop of calls: "
                "its peak is that of one image's pass, netlens' that of the whole batch's pass "
                "at once, as for every other method and library here.",
                "",
            ]
    return lines


def configuration(rows: list[dict]) -> list[str]:
    """The table of one configuration, then its notes (n/a, errors)."""
    lines = [COLUMNS, ALIGN]
    notes: dict[str, str] = {}
    for row in rows:
        method = row["method"] + (f" ({row['settings']})" if row["settings"] else "")
        if row["status"] != "ok":
            note = str(row.get("note", "")).split(". ")[0]
            who = row["method"] if row["status"] == "n/a" else f"{row['library']}: {row['method']}"
            notes.setdefault(f"{who} ({row['status']})", note)
            lines.append(f"| {method} | {row['library']} | {row['status']} |  |  |  |  |  |  |")
            continue
        passes = "{} / {}".format(*row["passes"])
        lines.append(
            f"| {method} | {row['library']} | {1e3 * row['time_s']:.1f} "
            f"| {_fmt(row.get('vs_fastest_peer'))} | {_fmt(row.get('vs_forward'))} "
            f"| {_fmt(row.get('vs_forward_backward'))} | {row['peak_mib']:.0f} "
            f"| {_fmt(row.get('vs_leanest_peer'))} | {passes} |"
        )
    lines.append("")
    for what, note in notes.items():
        lines += [f"- {what}: {note}"]
    return lines + ([""] if notes else [])


def markdown(result: dict) -> str:
    lines = header(result) + acceptance(result)
    rows = result["rows"]
    labels = list(dict.fromkeys(r["label"] for r in rows if r["section"] == "matrix"))
    if labels:
        lines += ["## Matrix", ""]
    for label in labels:
        matrix = [r for r in rows if r["section"] == "matrix" and r["label"] == label]
        lines += [f"### {label}", ""] + configuration(matrix)
    many = [r for r in rows if r["section"] == MANY_SECTION]
    if many:
        lines += [
            f"## Many targets: {MANY_IMAGES} images x their top-{MANY_CLASSES} classes",
            "",
            f"netlens: one call with a ({MANY_IMAGES}, {MANY_CLASSES}) target tensor; captum and "
            f"pytorch-grad-cam: every image repeated {MANY_CLASSES} times (a batch of "
            f"{MANY_IMAGES * MANY_CLASSES}) with the {MANY_IMAGES * MANY_CLASSES} classes; "
            "torchcam: one forward pass, then the extractor once per class column (keeping the "
            f"graph in between). Baselines: the {MANY_IMAGES} images alone.",
            "",
        ]
        lines += [f"### {many[0]['label']}", ""] + configuration(many)
    if result["map_errors"]:
        lines += ["## Maps compared", "", "| configuration | maps | max relative error |"]
        lines += ["| --- | --- | ---: |"]
        for e in result["map_errors"]:
            error = "failed" if e["error"] is None else f"{e['error']:.1e}"
            lines.append(f"| {e['label']} | {e['pair']} | {error} |")
        lines.append("")
    if result["throughput"]:
        lines += throughput(result["throughput"])
    return "\n".join(lines)


def throughput(rows: list[dict]) -> list[str]:
    first = rows[0]
    bare = next((r for r in rows if r["library"] == "baseline"), None)
    lines = [
        "## FeatureExtractor throughput",
        "",
        f"{first['model']}, {first['images']} random images of {first['side']} px in a "
        f"TensorDataset, DataLoader batches of {first['batch']}: "
        '`FeatureExtractor(model, ["layer4", "avgpool"]).extract(loader)` against a bare loop '
        "of the same forward passes over the same loader (no grad, outputs dropped); median "
        "seconds per pass over the loader.",
        "",
        "| case | time (s) | images / s | / bare loop | peak (MiB) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    names = {"baseline": "bare loop", "netlens": "FeatureExtractor.extract"}
    for r in rows:
        ratio = _fmt(r["time_s"] / bare["time_s"] if bare else None)
        lines.append(
            f"| {names[r['library']]} | {r['time_s']:.2f} | {r['images_per_s']:.1f} | {ratio} "
            f"| {r['peak_mib']:.0f} |"
        )
    return lines + [""]
