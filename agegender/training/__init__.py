"""Training: the loop both models share (loop.py), what it minimises (objective.py), how it
reads the faces (batches.py), model B's cached features (features.py), several devices
(distribute.py). Imports the core and the model builders, nothing of serving or the report.
"""
