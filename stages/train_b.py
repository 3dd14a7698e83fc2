"""Stage `train_b`: a pretrained backbone fine-tuned in two phases.

Phase 1 trains the heads on the frozen backbone; phase 2 unfreezes its top layers
(BatchNorm stays frozen) and trains on at a lower learning rate. Both phases log to one
DVCLive run; the best weights over both by val_loss are saved.
"""

from __future__ import annotations

from stages import params as P
from stages.data import load_split
from stages.errors import run
from stages.models import backbone_of, build_model_b, unfreeze_top
from stages.training import Trainer, setup

MODEL = "models/age_gender_B.keras"
LIVE_DIR = "reports/train_b"


def main() -> None:
    params = P.load()
    p = params.model_b
    setup(params.seed, params.train)
    train, val = load_split("train"), load_split("val")
    model = build_model_b(p, params.data.image_size, params.seed)
    model.summary(line_length=100)
    with Trainer(model, LIVE_DIR, train, val) as trainer:
        trainer.phase("phase1", p.phase1, p.loss)
        layers = unfreeze_top(backbone_of(model), p.phase2.unfreeze)
        print(f"phase2: {layers} backbone layers with weights unfrozen (BatchNorm stays frozen)")
        trainer.phase("phase2", p.phase2, p.loss)
        trainer.save(MODEL)


if __name__ == "__main__":
    run(main)
