#!/bin/bash

# Parameters
#SBATCH --account=ml
#SBATCH --constraint=ib
#SBATCH --cpus-per-task=1
#SBATCH --error=<FOLDER>/%j_0_log.err
#SBATCH --exclude=node7
#SBATCH --exclusive
#SBATCH --job-name=jobkit
#SBATCH --mail-type=END
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --open-mode=append
#SBATCH --output=<FOLDER>/%j_0_log.out
#SBATCH --qos=low
#SBATCH --reservation=maint
#SBATCH --signal=URG@90
#SBATCH --time=60

# setup
export QUOTED='a b'
export WANDB_MODE=offline
module load cuda

# command
export SUBMITIT_EXECUTOR=slurm
<PYTHON> -u -m jobkit.worker --launcher slurm --store <STORE> JOB_ID
