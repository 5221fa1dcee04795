#!/usr/bin/env bash
# Draws modalities_1shot.png (README.md's figure) from the runs' eval.json files.
set -euo pipefail
cd "$(dirname "$0")"
MMFSL="${MMFSL:-mmfsl}"
R=runs
$MMFSL plot compare --group-by method --output modalities_1shot.png \
  --eval $R/protonet_{image,text,weighted,gated}_1shot/eval.json \
         $R/maml_{image,text,weighted,gated}_1shot/eval.json \
  --label image text "image + text (weighted)" "image + text (gated)" \
          image text "image + text (weighted)" "image + text (gated)"
