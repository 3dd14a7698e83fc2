"""Age-and-gender pipeline stages: each `python -m stages.NAME` is one DVC stage."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out of logs
