"""Stage `train_a`: the multi-task CNN trained from scratch."""

from __future__ import annotations

from stages import params as P
from stages.data import load_split
from stages.errors import run
from stages.models import build_model_a
from stages.training import Trainer, setup

MODEL = "models/age_gender_A.keras"
LIVE_DIR = "reports/train_a"


def main() -> None:
    params = P.load()
    p, size = params.model_a, params.data.image_size
    setup(params.seed, params.train)
    train, val = load_split("train"), load_split("val")
    model = build_model_a(p, size, params.seed)
    model.summary(line_length=100)
    trainer = Trainer(model, LIVE_DIR, train, val)
    trainer.phase("fit", p.fit, p.loss)
    trainer.save(MODEL, build_model_a(p, size, params.seed, serving=True))


if __name__ == "__main__":
    run(main)
