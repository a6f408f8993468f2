#!/bin/bash

# Parameters
#SBATCH --cpus-per-task=8
#SBATCH --error=<FOLDER>/%j_0_log.err
#SBATCH --gpus=a100:2
#SBATCH --job-name=train
#SBATCH --mem=61036M
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --open-mode=append
#SBATCH --output=<FOLDER>/%j_0_log.out
#SBATCH --partition=gpu
#SBATCH --qos=high
#SBATCH --signal=URG@90
#SBATCH --time=120

# command
export SUBMITIT_EXECUTOR=slurm
<PYTHON> -u -m jobkit.worker --launcher slurm --store <STORE> JOB_ID
