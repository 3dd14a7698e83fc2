"""agegender: the library behind the pipeline's stages, the report and the predict CLI."""

import os

# Keep TensorFlow's C++ start-up chatter out of the logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
