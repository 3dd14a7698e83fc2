"""agegender: the library behind the pipeline's stages, the report and the predict CLI.

One folder per stage family, and a core every stage uses (the modules here: params,
layout, errors, files, data, images, labels, metric_table, environment, runtime):

    prepare/   archive or folder -> splits              imports the core
    models/    the two models' builders                 imports the core
    training/  the loop both models share               imports the core and models
    evaluate/  loading, prediction, scores              imports the core
    serve/     agegender-predict, the API, detection    imports the core, evaluate, models
    report/    report.md and report.html from files     imports the core, evaluate, models
    shift/     agegender-evaluate and -calibrate:        imports the core, evaluate, models,
               a user's own labelled faces               serve

The core imports no subpackage; tests/test_layout.py holds the rule.
"""

import os

# Keep TensorFlow's C++ start-up chatter out of the logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
