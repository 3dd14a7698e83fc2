"""Preparing data (stage prepare): an archive or folder of UTKFace files in, deduplicated,
stratified splits out. Imports the core only: nothing of models, training or serving.
"""
