"""Scoring: loading a saved model, batched prediction with flip averaging, the ensemble's
weights, every score. Imports the core only: a saved model needs no builder to be scored.
"""
