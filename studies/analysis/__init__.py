"""Pure statistics over a tidy DataFrame (one row per rating): exclusions, summaries with confidence
intervals, omnibus and pairwise tests, preference scores, robustness checks, power planning and figures.

No Django here, so the same functions analyse data collected elsewhere (`manage.py analyze`).
`run.run_analysis` puts them together in a fixed order; `studies/reports.py` writes the report.
"""
