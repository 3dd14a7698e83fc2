#!/usr/bin/env bash
# Put what ../shared holds where the pipeline looks for it, when it is not there yet:
#   the UTKFace archive -> data/raw/UTKFace.tar.gz (the path params.yaml's data.raw names)
#   ImageNet weights    -> $KERAS_HOME/models/ (default ~/.keras/models), Keras's own cache
# Without ../shared it does nothing: download UTKFace yourself (see README); Keras
# downloads the weights itself when online.
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${SHARED_DIR:-../shared}
if [ -f "$shared/datasets/UTKFace.tar.gz" ] && [ ! -e data/raw/UTKFace.tar.gz ]; then
  mkdir -p data/raw
  cp "$shared/datasets/UTKFace.tar.gz" data/raw/UTKFace.tar.gz
  echo "use_shared: copied $shared/datasets/UTKFace.tar.gz to data/raw/"
fi
cache="${KERAS_HOME:-$HOME/.keras}/models"
if compgen -G "$shared/weights/*.h5" > /dev/null; then
  mkdir -p "$cache"
  for f in "$shared"/weights/*.h5; do
    [ -e "$cache/$(basename "$f")" ] || { cp "$f" "$cache/"; echo "use_shared: copied $(basename "$f") to $cache/"; }
  done
fi
