from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ComputePower(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMPUTE_POWER_UNSPECIFIED: _ClassVar[ComputePower]
    COMPUTE_POWER_LOW: _ClassVar[ComputePower]
    COMPUTE_POWER_MEDIUM: _ClassVar[ComputePower]
    COMPUTE_POWER_HIGH: _ClassVar[ComputePower]
COMPUTE_POWER_UNSPECIFIED: ComputePower
COMPUTE_POWER_LOW: ComputePower
COMPUTE_POWER_MEDIUM: ComputePower
COMPUTE_POWER_HIGH: ComputePower

class PrivacyConfig(_message.Message):
    __slots__ = ("epsilon", "delta", "max_grad_norm", "noise_multiplier")
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    MAX_GRAD_NORM_FIELD_NUMBER: _ClassVar[int]
    NOISE_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    epsilon: float
    delta: float
    max_grad_norm: float
    noise_multiplier: float
    def __init__(self, epsilon: _Optional[float] = ..., delta: _Optional[float] = ..., max_grad_norm: _Optional[float] = ..., noise_multiplier: _Optional[float] = ...) -> None: ...

class ClientCapabilities(_message.Message):
    __slots__ = ("compute_power", "network_bandwidth_mbps", "available_samples", "supported_models", "privacy_requirements", "budget_exhausted", "codecs")
    COMPUTE_POWER_FIELD_NUMBER: _ClassVar[int]
    NETWORK_BANDWIDTH_MBPS_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SUPPORTED_MODELS_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_REQUIREMENTS_FIELD_NUMBER: _ClassVar[int]
    BUDGET_EXHAUSTED_FIELD_NUMBER: _ClassVar[int]
    CODECS_FIELD_NUMBER: _ClassVar[int]
    compute_power: ComputePower
    network_bandwidth_mbps: int
    available_samples: int
    supported_models: _containers.RepeatedScalarFieldContainer[str]
    privacy_requirements: PrivacyConfig
    budget_exhausted: bool
    codecs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, compute_power: _Optional[_Union[ComputePower, str]] = ..., network_bandwidth_mbps: _Optional[int] = ..., available_samples: _Optional[int] = ..., supported_models: _Optional[_Iterable[str]] = ..., privacy_requirements: _Optional[_Union[PrivacyConfig, _Mapping]] = ..., budget_exhausted: _Optional[bool] = ..., codecs: _Optional[_Iterable[str]] = ...) -> None: ...

class ClientRegistration(_message.Message):
    __slots__ = ("client_id", "capabilities")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    capabilities: ClientCapabilities
    def __init__(self, client_id: _Optional[str] = ..., capabilities: _Optional[_Union[ClientCapabilities, _Mapping]] = ...) -> None: ...

class RegistrationResponse(_message.Message):
    __slots__ = ("client_id", "run_id", "model_name")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    run_id: str
    model_name: str
    def __init__(self, client_id: _Optional[str] = ..., run_id: _Optional[str] = ..., model_name: _Optional[str] = ...) -> None: ...

class RoundConfig(_message.Message):
    __slots__ = ("local_epochs", "batch_size", "learning_rate", "codec")
    LOCAL_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    local_epochs: int
    batch_size: int
    learning_rate: float
    codec: str
    def __init__(self, local_epochs: _Optional[int] = ..., batch_size: _Optional[int] = ..., learning_rate: _Optional[float] = ..., codec: _Optional[str] = ...) -> None: ...

class TaskRequest(_message.Message):
    __slots__ = ("client_id", "wait_seconds")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    wait_seconds: float
    def __init__(self, client_id: _Optional[str] = ..., wait_seconds: _Optional[float] = ...) -> None: ...

class TaskResponse(_message.Message):
    __slots__ = ("kind", "round_number", "config", "deadline_unix")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[TaskResponse.Kind]
        KIND_TRAIN: _ClassVar[TaskResponse.Kind]
        KIND_WAIT: _ClassVar[TaskResponse.Kind]
        KIND_FINISHED: _ClassVar[TaskResponse.Kind]
    KIND_UNSPECIFIED: TaskResponse.Kind
    KIND_TRAIN: TaskResponse.Kind
    KIND_WAIT: TaskResponse.Kind
    KIND_FINISHED: TaskResponse.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    ROUND_NUMBER_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_UNIX_FIELD_NUMBER: _ClassVar[int]
    kind: TaskResponse.Kind
    round_number: int
    config: RoundConfig
    deadline_unix: float
    def __init__(self, kind: _Optional[_Union[TaskResponse.Kind, str]] = ..., round_number: _Optional[int] = ..., config: _Optional[_Union[RoundConfig, _Mapping]] = ..., deadline_unix: _Optional[float] = ...) -> None: ...

class ModelRequest(_message.Message):
    __slots__ = ("client_id", "round_number", "have_sha256")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_NUMBER_FIELD_NUMBER: _ClassVar[int]
    HAVE_SHA256_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    round_number: int
    have_sha256: str
    def __init__(self, client_id: _Optional[str] = ..., round_number: _Optional[int] = ..., have_sha256: _Optional[str] = ...) -> None: ...

class BlobHeader(_message.Message):
    __slots__ = ("round_number", "total_bytes", "sha256", "base_sha256", "model_sha256", "xxh3_128")
    ROUND_NUMBER_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    BASE_SHA256_FIELD_NUMBER: _ClassVar[int]
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    XXH3_128_FIELD_NUMBER: _ClassVar[int]
    round_number: int
    total_bytes: int
    sha256: str
    base_sha256: str
    model_sha256: str
    xxh3_128: str
    def __init__(self, round_number: _Optional[int] = ..., total_bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., base_sha256: _Optional[str] = ..., model_sha256: _Optional[str] = ..., xxh3_128: _Optional[str] = ...) -> None: ...

class ModelChunk(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: BlobHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[BlobHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class UpdateHeader(_message.Message):
    __slots__ = ("client_id", "round_number", "update_id", "num_samples", "training_loss", "eval_accuracy", "eval_loss", "eval_samples", "train_seconds", "privacy_budget_used", "total_bytes", "sha256", "xxh3_128")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_NUMBER_FIELD_NUMBER: _ClassVar[int]
    UPDATE_ID_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    TRAINING_LOSS_FIELD_NUMBER: _ClassVar[int]
    EVAL_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    EVAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    EVAL_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    TRAIN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_BUDGET_USED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    XXH3_128_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    round_number: int
    update_id: str
    num_samples: int
    training_loss: float
    eval_accuracy: float
    eval_loss: float
    eval_samples: int
    train_seconds: float
    privacy_budget_used: float
    total_bytes: int
    sha256: str
    xxh3_128: str
    def __init__(self, client_id: _Optional[str] = ..., round_number: _Optional[int] = ..., update_id: _Optional[str] = ..., num_samples: _Optional[int] = ..., training_loss: _Optional[float] = ..., eval_accuracy: _Optional[float] = ..., eval_loss: _Optional[float] = ..., eval_samples: _Optional[int] = ..., train_seconds: _Optional[float] = ..., privacy_budget_used: _Optional[float] = ..., total_bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., xxh3_128: _Optional[str] = ...) -> None: ...

class UpdateChunk(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: UpdateHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[UpdateHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class UpdateAck(_message.Message):
    __slots__ = ("round_number", "duplicate", "updates_received", "updates_expected")
    ROUND_NUMBER_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    UPDATES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    UPDATES_EXPECTED_FIELD_NUMBER: _ClassVar[int]
    round_number: int
    duplicate: bool
    updates_received: int
    updates_expected: int
    def __init__(self, round_number: _Optional[int] = ..., duplicate: _Optional[bool] = ..., updates_received: _Optional[int] = ..., updates_expected: _Optional[int] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ClientSummary(_message.Message):
    __slots__ = ("client_id", "capabilities", "registered_at", "last_seen_at")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_AT_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    capabilities: ClientCapabilities
    registered_at: float
    last_seen_at: float
    def __init__(self, client_id: _Optional[str] = ..., capabilities: _Optional[_Union[ClientCapabilities, _Mapping]] = ..., registered_at: _Optional[float] = ..., last_seen_at: _Optional[float] = ...) -> None: ...

class RoundSummary(_message.Message):
    __slots__ = ("round_number", "status", "selected_clients", "participating_clients", "accuracy", "loss", "client_eval_accuracy", "training_loss", "convergence_score", "bytes_up", "bytes_down", "started_at", "completed_at", "failure_reason", "global_model_path")
    ROUND_NUMBER_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SELECTED_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    PARTICIPATING_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_EVAL_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    TRAINING_LOSS_FIELD_NUMBER: _ClassVar[int]
    CONVERGENCE_SCORE_FIELD_NUMBER: _ClassVar[int]
    BYTES_UP_FIELD_NUMBER: _ClassVar[int]
    BYTES_DOWN_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_MODEL_PATH_FIELD_NUMBER: _ClassVar[int]
    round_number: int
    status: str
    selected_clients: int
    participating_clients: int
    accuracy: float
    loss: float
    client_eval_accuracy: float
    training_loss: float
    convergence_score: float
    bytes_up: int
    bytes_down: int
    started_at: float
    completed_at: float
    failure_reason: str
    global_model_path: str
    def __init__(self, round_number: _Optional[int] = ..., status: _Optional[str] = ..., selected_clients: _Optional[int] = ..., participating_clients: _Optional[int] = ..., accuracy: _Optional[float] = ..., loss: _Optional[float] = ..., client_eval_accuracy: _Optional[float] = ..., training_loss: _Optional[float] = ..., convergence_score: _Optional[float] = ..., bytes_up: _Optional[int] = ..., bytes_down: _Optional[int] = ..., started_at: _Optional[float] = ..., completed_at: _Optional[float] = ..., failure_reason: _Optional[str] = ..., global_model_path: _Optional[str] = ...) -> None: ...

class TrainingStatus(_message.Message):
    __slots__ = ("run_id", "model_name", "state", "num_rounds", "completed_rounds", "current_round", "updates_received", "updates_expected", "clients", "rounds", "rejections", "privacy", "central_privacy")
    class RejectionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    NUM_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_ROUND_FIELD_NUMBER: _ClassVar[int]
    UPDATES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    UPDATES_EXPECTED_FIELD_NUMBER: _ClassVar[int]
    CLIENTS_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    REJECTIONS_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_FIELD_NUMBER: _ClassVar[int]
    CENTRAL_PRIVACY_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    model_name: str
    state: str
    num_rounds: int
    completed_rounds: int
    current_round: int
    updates_received: int
    updates_expected: int
    clients: _containers.RepeatedCompositeFieldContainer[ClientSummary]
    rounds: _containers.RepeatedCompositeFieldContainer[RoundSummary]
    rejections: _containers.ScalarMap[str, int]
    privacy: _containers.RepeatedCompositeFieldContainer[PrivacyLine]
    central_privacy: CentralPrivacy
    def __init__(self, run_id: _Optional[str] = ..., model_name: _Optional[str] = ..., state: _Optional[str] = ..., num_rounds: _Optional[int] = ..., completed_rounds: _Optional[int] = ..., current_round: _Optional[int] = ..., updates_received: _Optional[int] = ..., updates_expected: _Optional[int] = ..., clients: _Optional[_Iterable[_Union[ClientSummary, _Mapping]]] = ..., rounds: _Optional[_Iterable[_Union[RoundSummary, _Mapping]]] = ..., rejections: _Optional[_Mapping[str, int]] = ..., privacy: _Optional[_Iterable[_Union[PrivacyLine, _Mapping]]] = ..., central_privacy: _Optional[_Union[CentralPrivacy, _Mapping]] = ...) -> None: ...

class CentralPrivacy(_message.Message):
    __slots__ = ("epsilon_spent", "target_epsilon", "delta", "noise_multiplier", "clip_norm", "rounds_charged", "exhausted")
    EPSILON_SPENT_FIELD_NUMBER: _ClassVar[int]
    TARGET_EPSILON_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    NOISE_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    CLIP_NORM_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_CHARGED_FIELD_NUMBER: _ClassVar[int]
    EXHAUSTED_FIELD_NUMBER: _ClassVar[int]
    epsilon_spent: float
    target_epsilon: float
    delta: float
    noise_multiplier: float
    clip_norm: float
    rounds_charged: int
    exhausted: bool
    def __init__(self, epsilon_spent: _Optional[float] = ..., target_epsilon: _Optional[float] = ..., delta: _Optional[float] = ..., noise_multiplier: _Optional[float] = ..., clip_norm: _Optional[float] = ..., rounds_charged: _Optional[int] = ..., exhausted: _Optional[bool] = ...) -> None: ...

class PrivacyLine(_message.Message):
    __slots__ = ("client_id", "epsilon_spent", "epsilon_budget", "delta", "exhausted")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    EPSILON_SPENT_FIELD_NUMBER: _ClassVar[int]
    EPSILON_BUDGET_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    EXHAUSTED_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    epsilon_spent: float
    epsilon_budget: float
    delta: float
    exhausted: bool
    def __init__(self, client_id: _Optional[str] = ..., epsilon_spent: _Optional[float] = ..., epsilon_budget: _Optional[float] = ..., delta: _Optional[float] = ..., exhausted: _Optional[bool] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("to_round", "reason")
    TO_ROUND_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    to_round: int
    reason: str
    def __init__(self, to_round: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class RollbackResponse(_message.Message):
    __slots__ = ("restored_round", "rolled_back_rounds", "reason")
    RESTORED_ROUND_FIELD_NUMBER: _ClassVar[int]
    ROLLED_BACK_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    restored_round: int
    rolled_back_rounds: _containers.RepeatedScalarFieldContainer[int]
    reason: str
    def __init__(self, restored_round: _Optional[int] = ..., rolled_back_rounds: _Optional[_Iterable[int]] = ..., reason: _Optional[str] = ...) -> None: ...
