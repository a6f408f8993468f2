#!/bin/bash

# Parameters
#SBATCH --cpus-per-task=1
#SBATCH --dependency=afterok:12345:12346
#SBATCH --error=<FOLDER>/%j_0_log.err
#SBATCH --job-name=jobkit
#SBATCH --kill-on-invalid-dep=yes
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --open-mode=append
#SBATCH --output=<FOLDER>/%j_0_log.out
#SBATCH --signal=URG@90
#SBATCH --time=60

# command
export SUBMITIT_EXECUTOR=slurm
<PYTHON> -u -m jobkit.worker --launcher slurm --store <STORE> JOB_ID
