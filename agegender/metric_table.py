"""The scores the pipeline reports, in one table: what evaluate writes, how the report, the
README tables and reports/metrics.json name and print them, and which way is better.

Pure data (no imports), so the training stages can name their val scores from it without
depending on how evaluate computes them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Score:
    key: str  # in reports/eval/scores_*.json (and Keras's logs, for the two it computes)
    label: str  # table headers
    fmt: str  # "pct", "int" or a float format such as "3f" (report/text.py's fmt)
    lower_is_better: bool
    short: str = ""  # its name in reports/metrics.json; "" = not one of the compared few
    phrase: str = ""  # inside a sentence (default: the label)
    unit: str = ""  # of a difference, in a sentence: " years", " points"

    @property
    def words(self) -> str:
        return self.phrase or self.label

    @property
    def digits(self) -> int:
        """Decimals the scores files keep: a rate to 4 (0.9408), others as printed."""
        return 4 if self.fmt == "pct" else 0 if self.fmt == "int" else int(self.fmt[:-1])

    @property
    def decimals(self) -> int:
        """Of a difference in a sentence: percentage points to 2, others as printed."""
        return 2 if self.fmt == "pct" else 0 if self.fmt == "int" else int(self.fmt[:-1])


SCORES = (
    Score("gender_accuracy", "gender accuracy", "pct", False, short="acc", unit=" points"),
    Score("gender_f1", "gender F1 (female)", "4f", False),
    Score("gender_auc", "gender ROC AUC", "4f", False),
    Score("age_mae", "age MAE (years)", "3f", True, short="mae", phrase="age MAE", unit=" years"),
    Score("age_rmse", "age RMSE (years)", "3f", True, phrase="age RMSE", unit=" years"),
    Score(
        "age_within_5",
        "age within 5 years",
        "pct",
        False,
        unit=" points",
        phrase="share of ages within 5 years",
    ),  # fmt: skip
    Score("n", "faces", "int", False),  # a count, not a score: printed, never compared
)
BY_KEY = {score.key: score for score in SCORES}
COMPARED = tuple(score for score in SCORES if score.short)  # what runs are compared by
