"""The sections of a report, each as (anchor, heading, HTML): results, metrics against K,
paired comparisons, by history length, by target popularity, popularity of recommendations,
training curves, history reliance (diagnose), settings and provenance."""

from __future__ import annotations

from ..evaluation.report import available_cutoffs, available_metrics
from . import figures
from .analysis import (
    Breakdown,
    CaseGroup,
    breakdown,
    history_bucket,
    history_length,
    popularity_bucket,
    recommended_popularity,
    target_popularity,
)
from .inputs import DatasetFacts, Diagnosis, ResultFolder
from .page import card, definitions, details, grid, image, note, paragraph, table

HEADLINE_METRICS = ("ndcg@5", "ndcg@10", "hr@5", "hr@10")
HEADLINE_DIFFERENCE = "ndcg@10"  # the results table's paired difference to the reference
SIGNIFICANCE = 0.05  # p-values below it are shown in bold
Section = tuple[str, str, str]


def _value(results: dict, name: str) -> str:
    return f"{results['metrics'][name]:.4f}" if name in available_metrics(results) else "n/a"


def results_section(folders: list[ResultFolder], groups: list[CaseGroup]) -> Section:
    """The headline table, then what the reader must know before comparing rows."""
    several = len(groups) > 1
    letter = {folder.label: group.letter for group in groups for folder in group.members}
    versus = {group.members[0].label: "reference" for group in groups}
    versus |= {
        other.label: _difference(comparison["metrics"].get(HEADLINE_DIFFERENCE))
        for group in groups
        for other, comparison in group.comparisons
    }
    columns = {"result": lambda f: f.label}
    if several:
        columns["cases set"] = lambda f: letter[f.label]
    columns |= {"run": _run_kind, "cases": lambda f: str(f.results["num_cases"])}
    columns |= {name: lambda f, name=name: _value(f.results, name) for name in HEADLINE_METRICS}
    columns["coverage@10"] = lambda f: f"{f.results['coverage@10']:.3f}"
    columns["mean pop@10"] = lambda f: f"{f.results['mean_popularity@10']:.1f}"
    if any(f.results.get("invalid_rate") for f in folders):  # only free generation has any
        columns["invalid rate"] = lambda f: f"{f.results.get('invalid_rate', 0.0):.4f}"
    columns[f"{HEADLINE_DIFFERENCE} vs reference (95% CI, p)"] = lambda f: versus[f.label]
    rows = [[cell(folder) for cell in columns.values()] for folder in folders]
    caption = (
        "Full ranking over the distinct titles; n/a: the lists are too short to decide K. The "
        "reference of each result is the first result given on the same cases."
    )
    html = table(list(columns), rows, caption)
    if several:
        sets = "; ".join(f"{group.letter}: {_case_set(group)}" for group in groups)
        warning = (
            f"These results were made on {len(groups)} different sets of cases (other data, "
            f"split, cases or protocol); they are compared pairwise only within a set. {sets}."
        )
        html = note(warning) + html
    for folder in folders:
        html += "".join(note(f"{folder.label}: {text}") for text in folder.notes)
    return "results", "Results", html


def _difference(row: dict | None) -> str:
    """B - A [95% CI], p of one metric; n/a where it was not compared (lists too short)."""
    if row is None:
        return "n/a"
    low, high = row["ci95"]
    return f"{row['diff']:+.4f} [{low:+.4f}, {high:+.4f}], p={row['p_value']:.3f}"


def _run_kind(folder: ResultFolder) -> str:
    method = (folder.run_info or {}).get("method")
    kind = folder.results["run"]["kind"]
    return f"{kind} ({method})" if method else kind


def _case_set(group: CaseGroup) -> str:
    first = group.members[0].results
    data = first["data"]
    names = ", ".join(folder.label for folder in group.members)
    return f"{names} (data {data['fingerprint']}, {data['split']}, {first['num_cases']} cases)"


def comparison_section(groups: list[CaseGroup]) -> Section:
    """Per compared pair, what `cftrec compare A B` prints: B - A, paired interval, p-value."""
    intro = paragraph(
        "Each result against the first result given on the same cases: paired bootstrap 95% "
        f"interval and permutation p-value per metric (bold: p < {SIGNIFICANCE}).",
        muted=True,
    )
    tables = [
        _comparison_table(group.members[0].label, other.label, comparison)
        for group in groups
        for other, comparison in group.comparisons
    ]
    if not tables:
        tables = [note("Nothing to compare: no two results were made on the same cases.")]
    return "comparison", "Paired comparisons", intro + "".join(tables)


def _comparison_table(reference: str, other: str, comparison: dict) -> str:
    rows, strong = [], []
    for number, (name, row) in enumerate(comparison["metrics"].items()):
        low, high = row["ci95"]
        rows.append(
            [
                name,
                f"{row['a']:.4f}",
                f"{row['b']:.4f}",
                f"{row['diff']:+.4f}",
                f"[{low:+.4f}, {high:+.4f}]",
                f"{row['p_value']:.4f}",
            ]
        )
        if row["p_value"] < SIGNIFICANCE:
            strong += [(number, 3), (number, 5)]
    caption = (
        f"{other} - {reference} over {comparison['num_cases']} paired cases; {comparison['test']}"
    )
    if comparison["unavailable_cutoffs"]:
        cutoffs = ", ".join(f"@{k}" for k in comparison["unavailable_cutoffs"])
        caption += f"; {cutoffs} not compared (not decided by both lists)"
    headers = ["metric", f"A: {reference}", f"B: {other}", "B - A", "95% CI", "p"]
    return table(headers, rows, caption, strong=strong)


def cutoff_section(folders: list[ResultFolder], colour: dict[str, str]) -> Section:
    plots = []
    for metric, label in (("ndcg", "NDCG"), ("hr", "HR")):
        curves = {
            f.label: {
                k: f.results["metrics"][f"{metric}@{k}"]
                for k in available_cutoffs(f.results)
                if f"{metric}@{k}" in f.results["metrics"]
            }
            for f in folders
        }
        plots.append(
            image(
                figures.metric_at_cutoffs(label, curves, colour),
                f"{label}@K against K for each result",
            )
        )
    return "cutoffs", "NDCG@K and HR@K against K", grid(plots)


def _breakdown_html(
    split: Breakdown, folders: list[ResultFolder], xlabel: str, colour: dict[str, str]
) -> str:
    """Bars of NDCG@K and HR@K per bucket, the values in a fold-out table; a note for the
    results whose dataset was not found."""
    html = ""
    missing = [f.label for f in folders if f.label not in split.values]
    if missing:
        html += note(
            f"Not shown for {', '.join(missing)}: the dataset was not found (see the "
            "notes under Results)."
        )
    if not split.values:
        return html
    plots = [
        image(
            figures.breakdown_bars(split, metric, xlabel, colour),
            f"{metric}@{split.cutoff} by {xlabel} for each result",
        )
        for metric in ("NDCG", "HR")
    ]
    rows = [
        [
            bucket,
            label,
            str(values[bucket][0]),
            f"{values[bucket][1]:.4f}",
            f"{values[bucket][2]:.4f}",
        ]
        for bucket in split.buckets
        for label, values in split.values.items()
        if bucket in values
    ]
    headers = [xlabel, "result", "cases", f"NDCG@{split.cutoff}", f"HR@{split.cutoff}"]
    return html + grid(plots) + details("the values", table(headers, rows))


def history_section(
    folders: list[ResultFolder], facts: dict[str, DatasetFacts], colour: dict[str, str]
) -> Section:
    split = breakdown(folders, facts, history_length, history_bucket)
    intro = paragraph(
        "Cases grouped by the user's number of interactions before the target (the whole "
        "history; a prompt holds only its most recent items).",
        muted=True,
    )
    return (
        "history",
        "By history length",
        intro + _breakdown_html(split, folders, "history length", colour),
    )


def popularity_bucket_section(
    folders: list[ResultFolder], facts: dict[str, DatasetFacts], colour: dict[str, str]
) -> Section:
    split = breakdown(folders, facts, target_popularity, popularity_bucket)
    intro = paragraph(
        "Cases grouped by how often their target title occurs in the training "
        "interactions (powers of ten).",
        muted=True,
    )
    html = _breakdown_html(split, folders, "target popularity", colour)
    return "target-popularity", "By target popularity", intro + html


def recommended_popularity_section(
    folders: list[ResultFolder], facts: dict[str, DatasetFacts], colour: dict[str, str]
) -> Section:
    rows = [
        [
            f.label,
            f"{f.results['coverage@10']:.3f}",
            f"{f.results['mean_popularity@10']:.1f}",
            _mean(f.results.get("mean_popularity_history")),
            _mean(f.results.get("mean_popularity_target")),
        ]
        for f in folders
    ]
    html = table(
        ["result", "coverage@10", "mean pop@10", "mean pop of histories", "mean pop of targets"],
        rows,
        "pop: train interactions of a title; coverage: share of the distinct titles "
        "recommended in some top 10.",
    )
    plots = []
    for fingerprint, known in facts.items():
        counts = known.popularity
        members = [f for f in folders if f.results["data"]["fingerprint"] == fingerprint]
        recommended = {f.label: recommended_popularity(f, counts) for f in members}
        targets = [counts.get(c["target_title"], 0) for c in members[0].cases]
        plots.append(
            image(
                figures.popularity_distribution(recommended, targets, colour),
                "popularity of the recommended titles for each result",
                f"data {fingerprint}" if len(facts) > 1 else "",
            )
        )
    return "recommended-popularity", "Popularity of recommendations", html + grid(plots)


def _mean(value) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def training_section(folders: list[ResultFolder]) -> Section:
    plots, notes = [], []
    for folder in folders:
        if folder.training_log:
            method = (folder.run_info or {}).get("method", "llm")
            plots.append(
                image(
                    figures.training_curves(f"{folder.label} ({method})", folder.training_log),
                    f"training and validation loss of {folder.label}",
                )
            )
        elif folder.results["run"]["kind"] == "llm":
            notes.append(note(f"{folder.label}: no training log (see the notes under Results)."))
    html = paragraph(
        "From each LLM run's metrics.jsonl: the training loss, its recommendation "
        "(rec) and counterfactual (cf) terms, and the validation loss.",
        muted=True,
    )
    if not plots and not notes:
        html += paragraph("No LLM run among these results: baselines keep no loss curve.")
    return "training", "Training curves", html + "".join(notes) + grid(plots)


def diagnose_section(diagnoses: list[Diagnosis]) -> Section:
    parts = []
    for diagnosis in diagnoses:
        result = diagnosis.result
        rows = [
            [
                run["run"],
                str(run["cases"]),
                f"{run['mean_kl']:.4f}",
                f"{run['mean_effect']:+.4f}",
                f"{run['top1_changed']:.1%}",
            ]
            for run in result["runs"]
        ]
        parts.append(
            table(
                ["run", "cases", "mean KL", "mean effect", "top-1 changes"],
                rows,
                f"{diagnosis.path}: split {result.get('split', '?')}",
            )
        )
        if diagnosis.plot is None:
            parts.append(note(f"{diagnosis.path}: no diagnose.png to show."))
        else:
            parts.append(
                image(
                    figures.png_data_uri(diagnosis.plot),
                    "history reliance per response token",
                    "from cftrec diagnose",
                )
            )
    intro = paragraph(
        "How much each response token depends on the history: KL between the "
        "next-token distributions with and without the history, the causal effect "
        "on the true token, and how often the top recommendation changes without "
        "the history.",
        muted=True,
    )
    return "diagnose", "History reliance (diagnose)", intro + "".join(parts)


def _made_by(results: dict, folder: ResultFolder) -> list[tuple[str, str]]:
    """When and by which cftrec a result was made (results.json of cftrec 0.1 before the
    provenance field: the file's time, the commit not recorded)."""
    made = results.get("provenance")
    if made is None:
        return [("written", f"{folder.written} (time of results.json)"),
                ("cftrec commit", "not recorded in results.json")]  # fmt: skip
    return [("written", made["created"]),
            ("cftrec", f"{made['cftrec']}, commit {made['commit'] or 'unknown (not a git checkout)'}")]  # fmt: skip


def provenance_section(folders: list[ResultFolder]) -> Section:
    cards = []
    for folder in folders:
        results, info = folder.results, folder.run_info or {}
        data = results["data"]
        settings = results.get("settings", {})
        pairs = [
            ("results", str(folder.path)),
            *_made_by(results, folder),
            ("data", f"{data['path']} (fingerprint {data['fingerprint']})"),
            ("cases", f"{results['num_cases']} of split {data['split']}"),
            ("evaluation", ", ".join(f"{k}={v}" for k, v in settings.items() if v is not None)),
            ("run", f"{results['run']['path']} ({results['run']['kind']})"),
        ]
        training = {
            k: info[k]
            for k in ("method", "base_model", "alpha", "beta", "weighting", "seed")
            if k in info
        }
        if info.get("lora"):
            training["lora_r"] = info["lora"].get("r")
        summary = info.get("summary") or {}
        training |= {k: summary[k] for k in ("train_samples", "steps") if k in summary}
        if training:
            pairs.append(("training", ", ".join(f"{k}={v}" for k, v in training.items())))
        cards.append(card(folder.label, definitions(pairs)))
    return "provenance", "Settings and provenance", grid(cards)
