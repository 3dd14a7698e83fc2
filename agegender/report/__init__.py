"""The report stage: the pipeline's outputs -> reports/report.md and report.html.

Every number and every comparative sentence is computed from the files the other stages
wrote. The document is one list of blocks (document.py); report.md is their Markdown and
report.html markdown-it's rendering of it, so the two cannot disagree. Face thumbnails
(UTKFace pixels) go only into the HTML and reports/figures, which DVC caches: report.md is
committed to git and must never hold a face.

Imports the core, evaluate (scores, loading a model for its layer table) and models (the
backbone registry's names); never training: the report reads what training wrote.
"""
