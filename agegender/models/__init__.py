"""The two models: model A from scratch, model B on a pretrained backbone, and what they share
(pixels in, age and gender out; augmentation). Imports the core only, never training code.
"""
