"""The Slurm backend (:mod:`.backend`), its translation tables (:mod:`.translate`),
batched scheduler queries (:mod:`.queries`) and what each Slurm job runs
(:mod:`.entry`).

Deliberately empty: every Slurm task imports :mod:`.entry` through this
package, and must not pay for pydantic (about 0.1 s) on the way.
"""
