#!/bin/bash

# Parameters
#SBATCH --array=0-2%3
#SBATCH --cpus-per-task=1
#SBATCH --dependency=aftercorr:12346
#SBATCH --error=<FOLDER>/%A_%a_0_log.err
#SBATCH --job-name=evaluate
#SBATCH --kill-on-invalid-dep=yes
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --open-mode=append
#SBATCH --output=<FOLDER>/%A_%a_0_log.out
#SBATCH --signal=URG@90
#SBATCH --time=60

# command
export SUBMITIT_EXECUTOR=slurm
<PYTHON> -u -m jobkit.worker --launcher slurm --store <STORE> --array jk-eval --offset 0
