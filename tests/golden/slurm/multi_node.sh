#!/bin/bash

# Parameters
#SBATCH --cpus-per-task=1
#SBATCH --error=<FOLDER>/%j_0_log.err
#SBATCH --gpus-per-node=4
#SBATCH --job-name=jobkit
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --open-mode=append
#SBATCH --output=<FOLDER>/%j_0_log.out
#SBATCH --signal=URG@90
#SBATCH --time=90

# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output <FOLDER>/%j_%t_log.out --error <FOLDER>/%j_%t_log.err <PYTHON> -u -m submitit.core._submit <FOLDER>
