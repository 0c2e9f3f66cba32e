"""The coordinator's use cases, written against ports."""

from fedlearn.service.coordinator import Coordinator
from fedlearn.service.messages import CoordinatorConfig, TrainingStatus

__all__ = ["Coordinator", "CoordinatorConfig", "TrainingStatus"]
