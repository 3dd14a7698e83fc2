"""Stage `train_a`: the multi-task CNN trained from scratch."""

from __future__ import annotations

from agegender import params as P
from agegender.data import load_split
from agegender.errors import run
from agegender.layout import MODEL_A
from agegender.models import build_model_a
from agegender.training import Trainer, setup


def main() -> None:
    params = P.load()
    p, size = params.model_a, params.data.image_size
    setup(params.seed, params.train)
    train, val = load_split("train"), load_split("val")
    model = build_model_a(p, size, params.seed)
    model.summary(line_length=100)
    trainer = Trainer(model, MODEL_A.live_dir, train, val)
    trainer.phase("fit", p.fit, p.loss)
    trainer.save(MODEL_A.file, build_model_a(p, size, params.seed, serving=True))


if __name__ == "__main__":
    run(main)
