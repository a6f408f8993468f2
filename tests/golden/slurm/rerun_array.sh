#!/bin/bash

# Parameters
#SBATCH --account=ml
#SBATCH --array=3,7,12%3
#SBATCH --constraint=ib
#SBATCH --cpus-per-task=4
#SBATCH --error=/jobkit/folder/%A_%a_0_log.err
#SBATCH --exclude=node7
#SBATCH --gres=gpu:2
#SBATCH --job-name=golden
#SBATCH --mail-type=END
#SBATCH --mem=1024M
#SBATCH --nodelist=node1
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=2
#SBATCH --open-mode=append
#SBATCH --output=/jobkit/folder/%A_%a_0_log.out
#SBATCH --partition=debug
#SBATCH --qos=high
#SBATCH --signal=URG@90
#SBATCH --time=30

# setup
export A=1

# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output /jobkit/folder/%A_%a_%t_log.out --error /jobkit/folder/%A_%a_%t_log.err --cpu-bind=none python -u -m jobkit.worker --array jk-array --offset 0
