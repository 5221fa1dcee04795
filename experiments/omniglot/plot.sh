#!/usr/bin/env bash
# Draws methods_5w1s.png (README.md's figure) from the runs' 5-way 1-shot eval files.
set -euo pipefail
cd "$(dirname "$0")"
MMFSL="${MMFSL:-mmfsl}"
R=runs
$MMFSL plot compare --group-by method --output methods_5w1s.png \
  --eval $R/protonet/eval_5w1s.json $R/protonet_60way5shot/eval_5w1s.json \
         $R/maml_5way/eval_5w1s.json $R/fomaml_5way/eval_5w1s.json \
         $R/mamlpp_5way/eval_5w1s.json $R/anil_5way/eval_5w1s.json \
         $R/reptile_5way/eval_5w1s.json $R/baselinepp_5way/eval_5w1s.json \
  --label "20-way 1-shot training" "60-way 5-shot training" "second order" "first order" \
          "MAML++" "ANIL" "Reptile" "Baseline++"
