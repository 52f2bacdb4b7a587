"""hqs-sdk backend ``slurm``: tasks run as Slurm jobs, reached over one SSH connection."""

from hqs_sdk_slurm.backend import SlurmBackend
from hqs_sdk_slurm.config import BackendConfigurationSlurm

__all__ = ["BackendConfigurationSlurm", "SlurmBackend"]
