"""Section 1, Data: what prepare kept and dropped, and how the splits compare."""

from __future__ import annotations

import numpy as np

from agegender.labels import AGE_BUCKETS, RACES
from agegender.layout import SPLIT_NAMES
from agegender.params import Data
from agegender.report.document import Block, Figure, Heading, Table, Text
from agegender.report.figures import age_histogram_figure
from agegender.report.text import fmt, plural


def data_section(summary: dict, data: Data, seed: int) -> list[Block]:
    """From summary.json alone, with the data params that shaped the splits."""
    splits = summary["splits"]
    present = [s for s in SPLIT_NAMES if s in splits]
    blocks: list[Block] = [
        Heading(2, "Data"),
        Text(source_sentence(summary)),
        status_table(summary),
    ]
    odd = summary.get("malformed_name_files") or {}
    if odd:
        rows = [[f"`{name}`", problem] for name, problem in list(odd.items())[:20]]
        if len(odd) > 20:
            rows.append([f"... and {len(odd) - 20} more", "see data/prepared/faces.csv"])
        blocks += [Text("The malformed names:"), Table(["file name", "problem"], rows)]
    blocks += [
        Text(sampling_sentence(splits, data, seed)),
        Heading(3, "Split sizes, gender and race balance"),
        balance_table(splits, present),
        Text(balance_sentence(splits, present)),
        Figure(age_histogram_figure(splits), "Age distribution of each split, as a share of it."),
        Text(stratification_sentence(splits)),
        Table(
            ["split", *AGE_BUCKETS],
            [
                [name] + [fmt(splits[name]["age_histogram"].get(b, 0), "int") for b in AGE_BUCKETS]
                for name in present
            ],
        ),
    ]
    return blocks


def source_sentence(summary: dict) -> str:
    status = summary["status"]
    return (
        f"The source `{summary['source']}` holds {summary['files']:,} files, of which "
        f"{status['ok']:,} ({status['ok'] / max(summary['files'], 1):.1%}) are usable "
        f"faces. Labels come from the file names (`age_gender_race_date.jpg.chip.jpg`). "
        f"{summary['malformed_names']:,} names break that pattern; "
        f"{summary['malformed_names_recovered']:,} of them still give an unambiguous age "
        f"and gender and are kept."
    )


def status_table(summary: dict) -> Table:
    """Every source file by what prepare did with it."""
    status = summary["status"]
    return Table(
        ["status", "files", "what happens to them"],
        [
            ["ok", fmt(status["ok"], "int"), "used (split below)"],
            [
                "malformed",
                fmt(status["malformed"], "int"),
                "no valid age or gender in the name: dropped",
            ],
            [
                "duplicate",
                fmt(status["duplicate"], "int"),
                f"byte-identical to another file with the same labels "
                f"({plural(summary['duplicate_groups'], 'group')}): one copy kept",
            ],
            [
                "conflict",
                fmt(status["conflict"], "int"),
                f"byte-identical files with different labels "
                f"({plural(summary['conflict_groups'], 'group')}): all copies dropped",
            ],
            [
                "unreadable",
                fmt(status["unreadable"], "int"),
                "cannot be decoded as an image: dropped",
            ],
            ["total", fmt(summary["files"], "int"), ""],
        ],
    )


def sampling_sentence(splits: dict, data: Data, seed: int) -> str:
    """How the splits were drawn, in the params' own names."""
    test_note = (
        f"the test split takes {splits['test']['n']:,} of the remaining faces "
        f"(`data.test_size` = {data.test_size:,})"
        if splits.get("test", {}).get("n")
        else f"there is no test split (`data.test_size` = {data.test_size:,}), so the "
        f"comparison uses val"
    )
    rest = (
        f"the {splits['train']['n'] - (data.subset_size - data.val_size):,} usable faces left "
        f"over join train (`data.train_all`)"
        if data.train_all
        else f"{splits.get('unused', {}).get('n', 0):,} usable faces are left unused"
    )
    return (
        f"Train and val are a sample of `data.subset_size` = {data.subset_size:,} faces, "
        f"stratified by gender and age bucket (seed {seed}), {data.val_size:,} of them "
        f"for validation; {test_note}; {rest}. Images are resized to {data.image_size} x "
        f"{data.image_size} px."
    )


def balance_table(splits: dict, present: list[str]) -> Table:
    """Size, share of women, mean age and race counts per split."""
    races = [r for r in [*RACES, "Unknown"] if any(splits[s]["race"].get(r) for s in present)]
    rows = []
    for name in present:
        block = splits[name]
        n = max(block["n"], 1)
        rows.append(
            [
                name,
                fmt(block["n"], "int"),
                f"{100 * block['female_fraction']:.1f}%" if block["n"] else "–",
                f"{block['age_mean']:.1f}" if block["n"] else "–",
            ]
            + [
                f"{block['race'].get(r, 0):,} ({100 * block['race'].get(r, 0) / n:.1f}%)"
                for r in races
            ]
        )
    return Table(["split", "faces", "female", "mean age", *races], rows)


def stratification_sentence(splits: dict) -> str:
    """How far each split's age distribution is from train's: the stratification, checked."""
    shares = {
        name: np.array([splits[name]["age_histogram"].get(b, 0) for b in AGE_BUCKETS])
        / splits[name]["n"]
        for name in ("train", "val", "test")
        if splits.get(name, {}).get("n")
    }
    if "train" not in shares or len(shares) < 2:
        return "There is only one split to compare."
    gaps = {
        (name, AGE_BUCKETS[int(np.argmax(np.abs(share - shares["train"])))]): float(
            np.max(np.abs(share - shares["train"]))
        )
        for name, share in shares.items()
        if name != "train"
    }
    (split, bucket), gap = max(gaps.items(), key=lambda kv: kv[1])
    return (
        f"The age buckets' shares differ from train's by at most {100 * gap:.1f} points "
        f"({split}, {bucket})."
    )


def balance_sentence(splits: dict, present: list[str]) -> str:
    """The spread of gender and age across splits, and how unequal the races are."""
    used = [s for s in present if splits[s]["n"] and s != "unused"]
    if not used:
        return "No split holds any face."
    female = [splits[s]["female_fraction"] for s in used]
    train = splits[used[0]]
    races = sorted(((c, r) for r, c in train["race"].items() if r != "Unknown"), reverse=True)
    text = (
        f"Women make up {100 * min(female):.1f}% to {100 * max(female):.1f}% of each split, "
        f"and the mean age is {min(splits[s]['age_mean'] for s in used):.1f} to "
        f"{max(splits[s]['age_mean'] for s in used):.1f} years."
    )
    if len(races) >= 2:
        (most, big), (least, small) = races[0], races[-1]
        n = max(train["n"], 1)
        text += (
            f" Races are unbalanced: in {used[0]}, {big} faces are {100 * most / n:.1f}% and "
            f"{small} faces {100 * least / n:.1f}%, so per-race scores below rest on very "
            f"different numbers of faces."
        )
    return text
