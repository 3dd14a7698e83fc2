"""Serving: `agegender-predict`, `agegender-serve` (HTTP) and the Python API, face detection,
export. Imports the core, evaluate (loading and prediction) and models; never training.
"""
