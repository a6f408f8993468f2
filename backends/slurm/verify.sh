#!/usr/bin/env bash
# backends/slurm/verify.sh -- check the cluster from cluster.sh end to end and
# print one PASS/FAIL line per behaviour jobkit relies on, with timings.
#
#   verify.sh            all checks (about 2 minutes: the TIMEOUT check waits
#                        for Slurm's 30 s time-limit sweep)
#   verify.sh --quick    skip the TIMEOUT and accounting-off checks
#
# Brings the cluster up if needed (cluster.sh up) and leaves it running with
# accounting on. Exit status: number of failed checks.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
CL=$HERE/cluster.sh
QUICK=0
[[ ${1:-} == --quick ]] && QUICK=1
FAILS=0
WORK=$(mktemp -d "${TMPDIR:-/tmp}/jobkit-slurm-verify.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

now() { date +%s%N; }
ms_since() { echo $(( ($(now) - $1) / 1000000 )); }
pass() { printf 'PASS  %-34s %s\n' "$1" "$2"; }
fail() { printf 'FAIL  %-34s %s\n' "$1" "$2"; FAILS=$((FAILS + 1)); }

# until_ok SECONDS CMD... : poll every 50 ms
until_ok() {
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do (( SECONDS < deadline )) || return 1; sleep 0.05; done
}
sacct_state() { sacct -n -X -P -j "$1" -o State 2>/dev/null | head -n 1; }
sacct_is() { [[ $(sacct_state "$1") == "$2"* ]]; }
sq_state() { squeue -h -t all -j "$1" -o %T 2>/dev/null | head -n 1; }
sq_is() { [[ $(sq_state "$1") == "$2" ]]; }
job_gone() { [[ -z $(squeue -h -t PD,R,CG,CF -j "$1" -o %i 2>/dev/null) ]]; }

JOBKIT_SLURM_ACCOUNTING=1 "$CL" up >/dev/null || { echo "cluster.sh up failed"; exit 1; }
eval "$("$CL" env)"
cd "$WORK" || exit 1

# The TIMEOUT check is slow (60-90 s): submit it first, collect it at the end.
if (( ! QUICK )); then
  TO_T0=$(now)
  TO_JOB=$(sbatch --parsable --time=0:05 -o /dev/null --wrap 'sleep 300')
  TO_LIMIT=$(scontrol show job "$TO_JOB" | grep -o 'TimeLimit=[^ ]*')
fi

# 1. one job through sbatch, state from sacct
t=$(now)
j=$(sbatch --parsable -o hn.out --wrap hostname)
if until_ok 20 sacct_is "$j" COMPLETED; then
  pass "sbatch --wrap hostname" "job $j COMPLETED in sacct after $(ms_since "$t") ms; output '$(cat hn.out)'"
else
  fail "sbatch --wrap hostname" "job $j: sacct says '$(sacct_state "$j")'"
fi

# 2. 20-task array
t=$(now)
j=$(sbatch --parsable --array=0-19 -o "arr-%a.out" --wrap 'echo $SLURM_ARRAY_TASK_ID')
if until_ok 60 job_gone "$j"; then
  d=$(ms_since "$t")
  until_ok 20 sh -c "[ \$(sacct -n -X -P -j $j -o State | grep -c COMPLETED) -eq 20 ]"
  pass "20-task array" "all 20 done after $d ms (squeue), all 20 COMPLETED in sacct after $(ms_since "$t") ms; $(ls arr-*.out | wc -l) output files"
else
  fail "20-task array" "queue not empty after 60 s"
fi

# 3. fake GPUs: two 2-GPU jobs share the node with disjoint devices; a third waits
a=$(sbatch --parsable -p gpu --gpus=2 -o ga.out --wrap 'echo $CUDA_VISIBLE_DEVICES; sleep 3')
b=$(sbatch --parsable -p gpu --gres=gpu:a100:2 -o gb.out --wrap 'echo $CUDA_VISIBLE_DEVICES; sleep 3')
c=$(sbatch --parsable -p gpu --gpus=1 -o gc.out --wrap 'echo $CUDA_VISIBLE_DEVICES')
until_ok 10 sh -c "squeue -h -j $a,$b -o %T | grep -c RUNNING | grep -qx 2"
creason=$(squeue -h -j "$c" -o '%T %r')
until_ok 30 sacct_is "$c" COMPLETED
ga=$(cat ga.out) gb=$(cat gb.out) gc=$(cat gc.out)
if [[ -n $ga && -n $gb && $ga != "$gb" && ${#ga} == 3 && ${#gb} == 3 ]] && [[ $creason == "PENDING Resources" ]]; then
  pass "--gpus=2 x2 disjoint" "CUDA_VISIBLE_DEVICES '$ga' and '$gb'; a third GPU job was '$creason', then got '$gc'"
else
  fail "--gpus=2 x2 disjoint" "got '$ga' '$gb'; third job '$creason' -> '$gc'"
fi
if err=$(sbatch --gpus=5 --wrap true 2>&1); then
  fail "--gpus=5 refused" "accepted: $err"
else
  pass "--gpus=5 refused" "sbatch exit 1: $err"
fi

# 4. memory is scheduled (CR_Core_Memory): too much refused, two 5 GB jobs serialise
if err=$(sbatch --mem=9000 --wrap true 2>&1); then fail "--mem above RealMemory refused" "accepted: $err"
else pass "--mem above RealMemory refused" "$(tr "\n" " " <<<"$err")"; fi
m1=$(sbatch --parsable --mem=5000 -o /dev/null --wrap 'sleep 10')
m2=$(sbatch --parsable --mem=5000 -o /dev/null --wrap 'sleep 1')
# the reason is 'None' until the next scheduler pass (1 s tick)
until_ok 5 sh -c "squeue -h -j $m2 -o %r | grep -qx Resources"
r2=$(squeue -h -j "$m2" -o '%T %r')
if [[ $r2 == "PENDING Resources" ]]; then pass "--mem=5000 x2 serialised" "second job '$r2' while the first runs"
else fail "--mem=5000 x2 serialised" "second job '$r2'"; fi
scancel "$m1" "$m2"

# 5. scancel: a plain job, and one that ignores SIGTERM (KillWait=5)
for kind in plain ignores-TERM; do
  if [[ $kind == plain ]]; then j=$(sbatch --parsable -o /dev/null --wrap 'sleep 300')
  else j=$(sbatch --parsable -o /dev/null --wrap "trap '' TERM; for i in \$(seq 300); do sleep 1; done"); fi
  until_ok 10 sq_is "$j" RUNNING
  t=$(now); scancel "$j"
  if until_ok 15 sq_is "$j" CANCELLED; then
    d=$(ms_since "$t")
    until_ok 10 sacct_is "$j" CANCELLED
    pass "scancel ($kind)" "RUNNING -> CANCELLED in squeue after $d ms, in sacct after $(ms_since "$t") ms"
  else
    fail "scancel ($kind)" "state '$(sq_state "$j")' after 15 s"
  fi
done

# 6. QOS
j=$(sbatch --parsable --qos=high -o /dev/null --wrap true 2>&1) && pass "--qos=high accepted" "job $j, $(squeue -h -t all -j "$j" -o 'qos=%q priority=%Q')" \
  || fail "--qos=high accepted" "$j"
if err=$(sbatch --qos=bogus --wrap true 2>&1); then fail "--qos=bogus refused" "accepted: $err"
else pass "--qos=bogus refused" "$err"; fi
# priority order: fill the node, queue low, normal, high; high must start first
# (7 CPUs each: the TIMEOUT job holds the 8th; sleeps keep start times apart)
blk=$(sbatch --parsable -c 7 -o /dev/null --wrap 'sleep 2')
until_ok 10 sq_is "$blk" RUNNING
lo=$(sbatch --parsable -c 7 --qos=low -o /dev/null --wrap 'sleep 1')
no=$(sbatch --parsable -c 7 -o /dev/null --wrap 'sleep 1')
hi=$(sbatch --parsable -c 7 --qos=high -o /dev/null --wrap 'sleep 1')
until_ok 30 sacct_is "$lo" COMPLETED
order=$(sacct -n -X -P -j "$lo,$no,$hi" -o Start,QOS | sort | cut -d'|' -f2 | tr '\n' ' ')
if [[ $order == "high normal low " ]]; then pass "QOS priority order" "start order: $order"
else fail "QOS priority order" "start order: $order"; fi

# 7. array limit
max=$(scontrol show config | awk '$1 == "MaxArraySize" {print $3}')
if j=$(sbatch --parsable --hold --array=0-1000 -o /dev/null --wrap true 2>&1); then
  scancel "$j"
  if err=$(sbatch --hold --array=0-1001 -o /dev/null --wrap true 2>&1); then
    fail "MaxArraySize" "MaxArraySize=$max but 0-1001 accepted"; scancel "${err##* }"
  else pass "MaxArraySize" "MaxArraySize=$max: --array=0-1000 accepted, 0-1001 refused ($err)"; fi
else fail "MaxArraySize" "MaxArraySize=$max, 0-1000 refused: $j"; fi

# 8. slurmctld restart while a job runs
j=$(sbatch --parsable -o rs.out --wrap 'echo start; sleep 6; echo end')
until_ok 10 sq_is "$j" RUNNING
pid=$(cat "$JOBKIT_SLURM_DIR/run/slurmctld.pid")
t=$(now); kill "$pid"; while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done; dstop=$(ms_since "$t")
t=$(now); "$CL" start >/dev/null; dstart=$(ms_since "$t")
st=$(sq_state "$j")
if until_ok 30 sacct_is "$j" COMPLETED && [[ $(tr '\n' ' ' <rs.out) == "start end " ]]; then
  pass "slurmctld restart keeps job" "ctld stop ${dstop} ms, start ${dstart} ms; job $st after restart, then COMPLETED with full output"
else
  fail "slurmctld restart keeps job" "after restart '$st', sacct '$(sacct_state "$j")', output '$(cat rs.out)'"
fi

# 9. submitit through the cluster
if python3 -c 'import submitit' 2>/dev/null; then
  out=$(python3 - "$WORK/submitit" <<'EOF'
import sys, time, submitit
def double(x):
    return 2 * x
ex = submitit.AutoExecutor(folder=sys.argv[1] + "/%j", cluster="slurm")
ex.update_parameters(timeout_min=5, slurm_partition="debug")
times = []
for i in range(3):
    t0 = time.perf_counter()
    r = ex.submit(double, 21).result()
    assert r == 42, r
    times.append(time.perf_counter() - t0)
t0 = time.perf_counter()
jobs = ex.map_array(double, range(20))
assert [j.result() for j in jobs] == [2 * i for i in range(20)]
print("submit->result " + ", ".join(f"{x:.2f}" for x in times) + f" s; 20-task map_array {time.perf_counter() - t0:.2f} s")
EOF
  ) && pass "submitit AutoExecutor(slurm)" "$out" || fail "submitit AutoExecutor(slurm)" "$out"
else
  fail "submitit AutoExecutor(slurm)" "python3 cannot import submitit"
fi

# 10. collect the TIMEOUT job
if (( ! QUICK )); then
  if until_ok 150 sacct_is "$TO_JOB" TIMEOUT; then
    pass "--time=0:05 -> TIMEOUT" "$TO_LIMIT (rounded up to 1 minute); TIMEOUT after $(ms_since "$TO_T0") ms"
  else
    fail "--time=0:05 -> TIMEOUT" "$TO_LIMIT; state '$(sacct_state "$TO_JOB")' after $(ms_since "$TO_T0") ms"
  fi
fi

# 11. accounting off (after the TIMEOUT job, whose end must reach sacct): sbatch/squeue work, sacct fails; then switch back
if (( ! QUICK )); then
  t=$(now); JOBKIT_SLURM_ACCOUNTING=0 "$CL" start >/dev/null; dsw=$(ms_since "$t")
  j=$(sbatch --parsable -o off.out --wrap hostname)
  until_ok 15 sq_is "$j" COMPLETED
  st=$(sq_state "$j")
  err=$(sacct -j "$j" 2>&1); rc=$?
  qerr=$(sbatch --parsable --qos=bogus -o /dev/null --wrap true 2>&1); qrc=$?
  if [[ $st == COMPLETED && $rc != 0 ]]; then
    pass "accounting off" "switch ${dsw} ms; squeue shows $st; sacct exit $rc: $(tr '\n' ' ' <<<"$err")"
  else
    fail "accounting off" "squeue '$st', sacct exit $rc: $err"
  fi
  [[ $qrc == 0 ]] && pass "accounting off: --qos not checked" "--qos=bogus accepted (job $qerr): QOS needs slurmdbd" \
    || pass "accounting off: --qos checked" "$qerr"
  t=$(now); JOBKIT_SLURM_ACCOUNTING=1 "$CL" start >/dev/null; dsw=$(ms_since "$t")
  if sacct -n -X -j "$j" >/dev/null 2>&1; then pass "accounting back on" "switch ${dsw} ms; sacct answers again"
  else fail "accounting back on" "sacct still failing"; fi
fi

echo "$FAILS check(s) failed"
exit "$FAILS"
