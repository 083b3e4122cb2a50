"""The tidy long CSV of responses (one row per rating), shared by `export_responses` and the dashboard."""
from __future__ import annotations

import csv

from .selectors import EXPORT_COLUMNS, export_rows


def write_responses_csv(study, fh, *, include_pilot: bool = False) -> int:
    """Write the study's responses to a text file handle; return the number of rows."""
    writer = csv.DictWriter(fh, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    n = 0
    for row in export_rows(study, include_pilot=include_pilot):
        writer.writerow(row)
        n += 1
    return n
