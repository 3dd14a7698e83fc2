"""CSV cells a spreadsheet opens safely: names from outside never run as formulas."""

from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet may run as a formula


def safe_cell(value: object) -> object:
    """A text cell a spreadsheet would run as a formula (`=HYPERLINK(...)` as a file name)
    gets a leading apostrophe, as OWASP's CSV-injection guidance says; anything else as it
    is. For cells holding names from outside (file names), never for the numbers we write."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value
