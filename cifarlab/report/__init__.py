"""Study reports, derived only from the results database.

A study's reference experiment, display order, published targets and current config hashes are not
in the database; a `StudySpec` supplies them. Everything else (every number, figure and provenance
line) is read from the runs and epochs tables, so rerunning the report on the same database gives
the same README and PNGs byte for byte.

- `summary`: the spec, the runs a report counts, and the numbers per experiment (mean, std, 95 %
  confidence intervals, paired differences, convergence).
- `figures`: learning curves, accuracy bars, per-group validation curves, label-noise and SupCon
  figures (matplotlib).
- `markdown`: the README: results table, one finding per question, figures, configs, provenance.

CSV exports are `cifarlab.results.export`.
"""

from cifarlab.report.figures import band_limits, noise_rows
from cifarlab.report.markdown import interval, pm, unique, write_report
from cifarlab.report.summary import StudySpec, counted_rows, latest_done, present, summarize

__all__ = ["StudySpec", "band_limits", "counted_rows", "interval", "latest_done", "noise_rows", "pm", "present",
           "summarize", "unique", "write_report"]
