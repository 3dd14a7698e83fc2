"""Stage `train_b`: a pretrained backbone fine-tuned in two phases.

Phase 1 trains the heads on the frozen backbone (by default on its features, computed
once); phase 2 unfreezes its top layers and trains on at a lower learning rate, after a
warm-up. `model_b.batch_norm` says whether the backbone's BatchNorm statistics stay
its pretrained ones, are re-estimated on the training faces first, or also train in phase 2.
Both phases log to one DVCLive run; the best weights over both by val_loss are saved.
"""

from __future__ import annotations

from agegender import runtime

runtime.configure()  # backend and threads from params.yaml, before anything imports Keras

from agegender import params as P
from agegender.data import check_side, load_split
from agegender.errors import run
from agegender.files import check_writable
from agegender.layout import MODEL_B, PHASE1, PHASE2
from agegender.models import backbones
from agegender.models.model_b import (
    adapt_batch_norm,
    backbone_of,
    build_model_b,
    split_at_features,
    unfreeze_top,
)
from agegender.training import distribute
from agegender.training.features import cached_features
from agegender.training.loop import Trainer, setup


def main() -> None:
    params = P.load()
    p, size = params.model_b, params.data.image_size
    backbones.check(p)  # the backbone and its weights: the registry lives with model B
    record, d = setup(params.seed, params.train), params.train.distribute
    check_writable(MODEL_B.file.parent, MODEL_B.live_dir.parent)  # before, not after, training
    train, val = load_split("train"), load_split("val")
    for name, split in (("train", train), ("val", val)):
        check_side(split, size, name, "params.yaml's data.image_size")
    model = build_model_b(p, size, params.seed)
    model.summary(line_length=100)
    extractor, head = split_at_features(model)
    if p.batch_norm != "frozen":
        print(
            f"batch_norm {p.batch_norm}: re-estimating BatchNorm statistics on the training faces"
        )
        adapt_batch_norm(extractor, train.images, p.phase1.batch_size)
    trainer = Trainer(model, MODEL_B.live_dir, train, val, record, params.train.loader, params.seed)
    if p.phase1.cached_features:
        data = cached_features(
            extractor, head, train, val, p.phase1.batch_size, params.train.loader
        )
        trainer.phase(PHASE1, distribute.scaled(p.phase1, d), p.loss, model=head, data=data)
    else:
        trainer.phase(PHASE1, distribute.scaled(p.phase1, d), p.loss)
    layers = unfreeze_top(backbone_of(model), p.phase2.unfreeze, p.batch_norm, p.bn_momentum)
    print(f"phase2: {layers} backbone layers with weights unfrozen (BatchNorm {p.batch_norm})")
    trainer.phase(PHASE2, distribute.scaled(p.phase2, d), p.loss)
    trainer.save(MODEL_B.file, build_model_b(p, size, params.seed, serving=True))


if __name__ == "__main__":
    run(main)
