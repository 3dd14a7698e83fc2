"""Age-and-gender pipeline stages: each `python -m stages.NAME` is one DVC stage."""

import os

# Keep TensorFlow's C++ start-up chatter out of the logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
