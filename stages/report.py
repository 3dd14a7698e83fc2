"""Stage `report`: the pipeline's outputs -> reports/report.md, a self-contained
reports/report.html and the PNG figures in reports/figures (code: agegender.report)."""

from agegender import runtime

runtime.configure()  # backend and threads from params.yaml, before anything imports Keras

from agegender.errors import run
from agegender.report.build import main

if __name__ == "__main__":
    run(main)
