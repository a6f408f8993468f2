"""The Kubernetes backend: jobkit jobs as batch/v1 Jobs (see :mod:`.backend`).

Empty on purpose, as the Slurm package is: importing a module of the package
must not import the kubernetes client or pydantic.  The registry names
``jobkit.backends.kubernetes.backend:KubernetesBackend``.
"""
