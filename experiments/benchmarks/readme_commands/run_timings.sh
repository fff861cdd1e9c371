#!/bin/bash
# Times the README's commands one after the other in the current directory: wall (elapsed) and user/sys CPU
# seconds (children included, so the 2-process run counts both ranks), plus the load average before/after.
#   cd /tmp/somewhere && OMP_NUM_THREADS=1 bash <repo>/experiments/benchmarks/readme_commands/run_timings.sh
# Appends one line per command to timings.tsv: time, wall s, user s, sys s, exit code, load avg, command.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} TOKENIZERS_PARALLELISM=false WANDB_MODE=offline HF_HUB_OFFLINE=1
here="$(cd "$(dirname "$0")" && pwd)"
while IFS= read -r cmd; do
  [ -z "$cmd" ] && continue
  load=$(cut -d' ' -f1 /proc/loadavg)
  /usr/bin/time -f "%e\t%U\t%S\t%x" -o last_time.txt bash -c "$cmd" > "log_$(echo "$cmd" | md5sum | cut -c1-8).txt" 2>&1
  printf "%s\t%s\t%s->%s\t%s\n" "$(date +%H:%M:%S)" "$(tail -1 last_time.txt)" "$load" "$(cut -d' ' -f1 /proc/loadavg)" \
    "$cmd" >> timings.tsv
done < "$here/commands.txt"
