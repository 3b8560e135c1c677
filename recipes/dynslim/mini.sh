#!/bin/bash
# The README's mini results, end to end on 2 CPU cores (about 100 minutes): the three slimming rules
# for 60 steps each, the winner (lowest validation loss, mean over the UFs) continued to 300 steps, then
# joint router training for targets 0.10 / 0.25 / 0.50 from it, and the report with its figures.
#   bash recipes/dynslim/mini.sh [RUNS_DIR]        (default: runs)
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-runs}
D=$RUNS/dynslim
train="python recipes/dynslim/train.py run.dir=$RUNS trainer.enable_progress_bar=false data.segment_seconds=1
       data.batch_size=8 optim.lr=0.001 trainer.limit_val_batches=0.25"

for rule in random sandwich all; do
  [ -f "$D/mini-static-$rule/results.json" ] || $train stage=static slimmable.rule=$rule run.name=mini-static-$rule \
    trainer.limit_train_batches=60 trainer.max_epochs=1 trainer.limit_test_batches=8
  # A snapshot of the rule's run (the winner's folder is trained further below): its per-UF results,
  # among them the validation loss (mean over the UFs) its checkpoint was selected on.
  dest=$(realpath -m "$D-rules/$rule"); mkdir -p "$dest"
  (cd "$D/mini-static-$rule" && cp --parents $(find . -name results.json) "$dest")
done
best=$(python - "$D-rules" <<'PY'
import json, sys
scores = {r: json.load(open(f"{sys.argv[1]}/{r}/results.json"))["selection"]["best"] for r in ("random", "sandwich", "all")}
print(min(scores, key=scores.get))
PY
)
echo "slimming rule kept: $best"
$train stage=static slimmable.rule=$best run.name=mini-static-$best trainer.limit_train_batches=60 trainer.max_epochs=5 \
  trainer.check_val_every_n_epoch=2 run.resume=true
for target in 0.10 0.25 0.50; do
  $train stage=joint init_from=$D/mini-static-$best utilization.target=$target utilization.temperature_steps=60 \
    trainer.limit_train_batches=40 trainer.max_epochs=2 run.name=mini-dyn$target
done
python recipes/dynslim/report.py --static $D/mini-static-$best --dynamic $D/mini-dyn0.10 $D/mini-dyn0.25 $D/mini-dyn0.50 \
  --rules $D-rules/random $D-rules/sandwich $D-rules/all --figures recipes/dynslim
