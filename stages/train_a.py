"""Stage `train_a`: the multi-task CNN trained from scratch.

With model_a.teacher: model_b, its targets on the training faces are mixed with model B's
predictions (stage teach): knowledge distillation. The weights still start at random and
val keeps the true labels, so early stopping and the scores judge A on the truth.
"""

from __future__ import annotations

from agegender import runtime

runtime.configure()  # backend and threads from params.yaml, before anything imports Keras

from agegender import params as P
from agegender.data import check_side, load_split
from agegender.errors import run
from agegender.files import check_writable
from agegender.layout import FIT, MODEL_A
from agegender.models.model_a import build_model_a
from agegender.training import distribute
from agegender.training.loop import Trainer, setup
from agegender.training.objective import distilled, load_teacher, targets


def main() -> None:
    params = P.load()
    p, size = params.model_a, params.data.image_size
    record, d = setup(params.seed, params.train), params.train.distribute
    check_writable(MODEL_A.file.parent, MODEL_A.live_dir.parent)  # before, not after, training
    train, val = load_split("train"), load_split("val")
    for name, split in (("train", train), ("val", val)):
        check_side(split, size, name, "params.yaml's data.image_size")
    model = build_model_a(p, size, params.seed)
    model.summary(line_length=100)
    trainer = Trainer(model, MODEL_A.live_dir, train, val, record, params.train.loader, params.seed)
    data = None
    if p.teacher != "none":
        teacher = load_teacher(len(train))
        y = distilled(targets(model, train), teacher, p.teacher_weight, p.loss.age_sigma)
        print(f"train_a: targets {p.teacher_weight:g} of the way to {p.teacher}'s predictions")
        data = ((train.images, y), (val.images, targets(model, val)))
    trainer.phase(FIT, distribute.scaled(p.fit, d), p.loss, data=data, sizes=p.progressive)
    trainer.save(MODEL_A.file, build_model_a(p, size, params.seed, serving=True))


if __name__ == "__main__":
    run(main)
