#!/usr/bin/env bash
# The tests that once depended on timing (gated workers, sweeps stopped mid-trial, killed workers, signals, fault
# injection), repeated with no retry beside a CPU-bound process; stops at the first failure and prints one line a
# round. Run it on a machine doing nothing else: bash bench/race_repeat.sh [rounds, default 20]
cd "$(dirname "$0")/.." && . .venv/bin/activate
export SLMTUNE_DATA_DIR="${SLMTUNE_DATA_DIR:-$(cd .. && pwd)/shared/data/ag_news}"
python -c "while True: pass" & hog=$!
trap 'kill $hog' EXIT
log=$(mktemp -d /tmp/slmtune-races.XXXXXX)
for i in $(seq 1 "${1:-20}"); do
  start=$(date +%s)
  if python -m pytest -q -p no:cacheprovider -m 'slow or not slow' \
      "tests/unit/test_studies.py::test_sweep_stopped_mid_trial_resumes_every_point_once" \
      "tests/unit/test_studies.py::test_restarting_the_sweep_leaves_a_live_workers_trial_alone" \
      "tests/unit/test_studies.py::test_a_worker_killed_mid_trial_loses_nothing[sqlite]" \
      "tests/unit/test_studies.py::test_stopped_and_stale_trials_come_back_once" \
      "tests/unit/test_studies.py::test_two_workers_share_one_study" \
      "tests/unit/test_studies.py::test_a_run_folder_in_training_elsewhere_is_waited_for_not_deleted" \
      "tests/unit/test_workers.py::test_two_workers_train_each_run_once_with_the_results_of_one[sqlite]" \
      "tests/unit/test_train.py::test_sigterm_during_training_marks_interrupted" \
      tests/unit/test_fault_injection.py > "$log/round-$i.log" 2>&1; then
    echo "round $i passed in $(( $(date +%s) - start )) s: $(tail -1 "$log/round-$i.log")"
  else
    echo "round $i FAILED (log $log/round-$i.log): $(tail -1 "$log/round-$i.log")"; exit 1
  fi
done
