"""The pipeline's stages: each `python -m stages.NAME` is one stage of dvc.yaml.

They are thin entry points; the code they run lives in the `agegender` package.
"""
