from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ScoringMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCORING_MODE_UNSPECIFIED: _ClassVar[ScoringMode]
    SCORING_MODE_AUTO: _ClassVar[ScoringMode]
    SCORING_MODE_FIRST_TOKEN: _ClassVar[ScoringMode]
    SCORING_MODE_FULL: _ClassVar[ScoringMode]
    SCORING_MODE_PRUNED: _ClassVar[ScoringMode]

class ScoringMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCORING_METHOD_UNSPECIFIED: _ClassVar[ScoringMethod]
    SCORING_METHOD_DIRECT: _ClassVar[ScoringMethod]
    SCORING_METHOD_CHANNEL: _ClassVar[ScoringMethod]
    SCORING_METHOD_COMBINED: _ClassVar[ScoringMethod]

class LengthNormalization(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LENGTH_NORMALIZATION_UNSPECIFIED: _ClassVar[LengthNormalization]
    LENGTH_NORMALIZATION_SUM: _ClassVar[LengthNormalization]
    LENGTH_NORMALIZATION_MEAN: _ClassVar[LengthNormalization]

class Calibration(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CALIBRATION_UNSPECIFIED: _ClassVar[Calibration]
    CALIBRATION_NONE: _ClassVar[Calibration]
    CALIBRATION_CONTEXTUAL: _ClassVar[Calibration]
    CALIBRATION_DOMAIN_PMI: _ClassVar[Calibration]
    CALIBRATION_BATCH: _ClassVar[Calibration]
    CALIBRATION_AUTO: _ClassVar[Calibration]
    CALIBRATION_ONLINE: _ClassVar[Calibration]

class TruncationPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRUNCATION_POLICY_UNSPECIFIED: _ClassVar[TruncationPolicy]
    TRUNCATION_POLICY_TRUNCATE: _ClassVar[TruncationPolicy]
    TRUNCATION_POLICY_REJECT: _ClassVar[TruncationPolicy]

class Decision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECISION_UNSPECIFIED: _ClassVar[Decision]
    DECISION_ACCEPT: _ClassVar[Decision]
    DECISION_ABSTAIN: _ClassVar[Decision]
SCORING_MODE_UNSPECIFIED: ScoringMode
SCORING_MODE_AUTO: ScoringMode
SCORING_MODE_FIRST_TOKEN: ScoringMode
SCORING_MODE_FULL: ScoringMode
SCORING_MODE_PRUNED: ScoringMode
SCORING_METHOD_UNSPECIFIED: ScoringMethod
SCORING_METHOD_DIRECT: ScoringMethod
SCORING_METHOD_CHANNEL: ScoringMethod
SCORING_METHOD_COMBINED: ScoringMethod
LENGTH_NORMALIZATION_UNSPECIFIED: LengthNormalization
LENGTH_NORMALIZATION_SUM: LengthNormalization
LENGTH_NORMALIZATION_MEAN: LengthNormalization
CALIBRATION_UNSPECIFIED: Calibration
CALIBRATION_NONE: Calibration
CALIBRATION_CONTEXTUAL: Calibration
CALIBRATION_DOMAIN_PMI: Calibration
CALIBRATION_BATCH: Calibration
CALIBRATION_AUTO: Calibration
CALIBRATION_ONLINE: Calibration
TRUNCATION_POLICY_UNSPECIFIED: TruncationPolicy
TRUNCATION_POLICY_TRUNCATE: TruncationPolicy
TRUNCATION_POLICY_REJECT: TruncationPolicy
DECISION_UNSPECIFIED: Decision
DECISION_ACCEPT: Decision
DECISION_ABSTAIN: Decision

class Label(_message.Message):
    __slots__ = ("name", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class Example(_message.Message):
    __slots__ = ("text", "label")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    text: str
    label: str
    def __init__(self, text: _Optional[str] = ..., label: _Optional[str] = ...) -> None: ...

class DecisionThresholds(_message.Message):
    __slots__ = ("min_top_probability", "min_margin", "min_label_mass")
    MIN_TOP_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    MIN_MARGIN_FIELD_NUMBER: _ClassVar[int]
    MIN_LABEL_MASS_FIELD_NUMBER: _ClassVar[int]
    min_top_probability: float
    min_margin: float
    min_label_mass: float
    def __init__(self, min_top_probability: _Optional[float] = ..., min_margin: _Optional[float] = ..., min_label_mass: _Optional[float] = ...) -> None: ...

class ScoringOptions(_message.Message):
    __slots__ = ("mode", "length_normalization", "calibration", "template", "multi_label", "multi_label_threshold", "top_alternatives", "thresholds", "truncation", "content_free_inputs", "domain_premise", "method", "prior_scope", "channel_shortlist", "label_orders", "label_prior", "temperature")
    MODE_FIELD_NUMBER: _ClassVar[int]
    LENGTH_NORMALIZATION_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    MULTI_LABEL_FIELD_NUMBER: _ClassVar[int]
    MULTI_LABEL_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    TOP_ALTERNATIVES_FIELD_NUMBER: _ClassVar[int]
    THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATION_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FREE_INPUTS_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_PREMISE_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PRIOR_SCOPE_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_SHORTLIST_FIELD_NUMBER: _ClassVar[int]
    LABEL_ORDERS_FIELD_NUMBER: _ClassVar[int]
    LABEL_PRIOR_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    mode: ScoringMode
    length_normalization: LengthNormalization
    calibration: Calibration
    template: str
    multi_label: bool
    multi_label_threshold: float
    top_alternatives: int
    thresholds: DecisionThresholds
    truncation: TruncationPolicy
    content_free_inputs: _containers.RepeatedScalarFieldContainer[str]
    domain_premise: str
    method: ScoringMethod
    prior_scope: str
    channel_shortlist: int
    label_orders: int
    label_prior: _containers.RepeatedScalarFieldContainer[float]
    temperature: float
    def __init__(self, mode: _Optional[_Union[ScoringMode, str]] = ..., length_normalization: _Optional[_Union[LengthNormalization, str]] = ..., calibration: _Optional[_Union[Calibration, str]] = ..., template: _Optional[str] = ..., multi_label: _Optional[bool] = ..., multi_label_threshold: _Optional[float] = ..., top_alternatives: _Optional[int] = ..., thresholds: _Optional[_Union[DecisionThresholds, _Mapping]] = ..., truncation: _Optional[_Union[TruncationPolicy, str]] = ..., content_free_inputs: _Optional[_Iterable[str]] = ..., domain_premise: _Optional[str] = ..., method: _Optional[_Union[ScoringMethod, str]] = ..., prior_scope: _Optional[str] = ..., channel_shortlist: _Optional[int] = ..., label_orders: _Optional[int] = ..., label_prior: _Optional[_Iterable[float]] = ..., temperature: _Optional[float] = ...) -> None: ...

class ClassifyRequest(_message.Message):
    __slots__ = ("text", "labels", "instruction", "examples", "options")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    text: str
    labels: _containers.RepeatedCompositeFieldContainer[Label]
    instruction: str
    examples: _containers.RepeatedCompositeFieldContainer[Example]
    options: ScoringOptions
    def __init__(self, text: _Optional[str] = ..., labels: _Optional[_Iterable[_Union[Label, _Mapping]]] = ..., instruction: _Optional[str] = ..., examples: _Optional[_Iterable[_Union[Example, _Mapping]]] = ..., options: _Optional[_Union[ScoringOptions, _Mapping]] = ...) -> None: ...

class ClassifyResponse(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: Classification
    def __init__(self, result: _Optional[_Union[Classification, _Mapping]] = ...) -> None: ...

class ClassifyBatchRequest(_message.Message):
    __slots__ = ("texts", "labels", "instruction", "examples", "options")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    labels: _containers.RepeatedCompositeFieldContainer[Label]
    instruction: str
    examples: _containers.RepeatedCompositeFieldContainer[Example]
    options: ScoringOptions
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., labels: _Optional[_Iterable[_Union[Label, _Mapping]]] = ..., instruction: _Optional[str] = ..., examples: _Optional[_Iterable[_Union[Example, _Mapping]]] = ..., options: _Optional[_Union[ScoringOptions, _Mapping]] = ...) -> None: ...

class ClassifyBatchResponse(_message.Message):
    __slots__ = ("results", "usage")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[Classification]
    usage: Usage
    def __init__(self, results: _Optional[_Iterable[_Union[Classification, _Mapping]]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ...) -> None: ...

class ClassifyStreamRequest(_message.Message):
    __slots__ = ("id", "request")
    ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    id: str
    request: ClassifyRequest
    def __init__(self, id: _Optional[str] = ..., request: _Optional[_Union[ClassifyRequest, _Mapping]] = ...) -> None: ...

class ClassifyStreamResponse(_message.Message):
    __slots__ = ("id", "result", "status_code", "error_message")
    ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    id: str
    result: Classification
    status_code: int
    error_message: str
    def __init__(self, id: _Optional[str] = ..., result: _Optional[_Union[Classification, _Mapping]] = ..., status_code: _Optional[int] = ..., error_message: _Optional[str] = ...) -> None: ...

class ChatMessage(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class ScoreCompletionRequest(_message.Message):
    __slots__ = ("prompt", "messages", "completion", "top_alternatives")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_FIELD_NUMBER: _ClassVar[int]
    TOP_ALTERNATIVES_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    completion: str
    top_alternatives: int
    def __init__(self, prompt: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ..., completion: _Optional[str] = ..., top_alternatives: _Optional[int] = ...) -> None: ...

class ScoreCompletionResponse(_message.Message):
    __slots__ = ("tokens", "sum_logprob", "mean_logprob", "usage")
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    SUM_LOGPROB_FIELD_NUMBER: _ClassVar[int]
    MEAN_LOGPROB_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedCompositeFieldContainer[ScoredToken]
    sum_logprob: float
    mean_logprob: float
    usage: Usage
    def __init__(self, tokens: _Optional[_Iterable[_Union[ScoredToken, _Mapping]]] = ..., sum_logprob: _Optional[float] = ..., mean_logprob: _Optional[float] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ...) -> None: ...

class ScoredToken(_message.Message):
    __slots__ = ("token", "alternatives")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    ALTERNATIVES_FIELD_NUMBER: _ClassVar[int]
    token: TokenLogprob
    alternatives: _containers.RepeatedCompositeFieldContainer[TokenLogprob]
    def __init__(self, token: _Optional[_Union[TokenLogprob, _Mapping]] = ..., alternatives: _Optional[_Iterable[_Union[TokenLogprob, _Mapping]]] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetModelInfoResponse(_message.Message):
    __slots__ = ("model", "max_context_tokens", "max_labels", "max_batch_texts", "server_version", "engine_version", "chat_template", "templates", "vocab_size", "default_calibration", "default_method")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MAX_CONTEXT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_LABELS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_TEXTS_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    ENGINE_VERSION_FIELD_NUMBER: _ClassVar[int]
    CHAT_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    TEMPLATES_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_CALIBRATION_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_METHOD_FIELD_NUMBER: _ClassVar[int]
    model: str
    max_context_tokens: int
    max_labels: int
    max_batch_texts: int
    server_version: str
    engine_version: str
    chat_template: bool
    templates: _containers.RepeatedScalarFieldContainer[str]
    vocab_size: int
    default_calibration: Calibration
    default_method: ScoringMethod
    def __init__(self, model: _Optional[str] = ..., max_context_tokens: _Optional[int] = ..., max_labels: _Optional[int] = ..., max_batch_texts: _Optional[int] = ..., server_version: _Optional[str] = ..., engine_version: _Optional[str] = ..., chat_template: _Optional[bool] = ..., templates: _Optional[_Iterable[str]] = ..., vocab_size: _Optional[int] = ..., default_calibration: _Optional[_Union[Calibration, str]] = ..., default_method: _Optional[_Union[ScoringMethod, str]] = ...) -> None: ...

class TokenLogprob(_message.Message):
    __slots__ = ("token_id", "token", "logprob")
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    LOGPROB_FIELD_NUMBER: _ClassVar[int]
    token_id: int
    token: str
    logprob: float
    def __init__(self, token_id: _Optional[int] = ..., token: _Optional[str] = ..., logprob: _Optional[float] = ...) -> None: ...

class LabelScore(_message.Message):
    __slots__ = ("name", "probability", "logprob", "tokens", "uncalibrated_probability", "score", "channel_logprob", "estimated", "channel_estimated")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    LOGPROB_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    UNCALIBRATED_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_LOGPROB_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_ESTIMATED_FIELD_NUMBER: _ClassVar[int]
    name: str
    probability: float
    logprob: float
    tokens: _containers.RepeatedCompositeFieldContainer[TokenLogprob]
    uncalibrated_probability: float
    score: float
    channel_logprob: float
    estimated: bool
    channel_estimated: bool
    def __init__(self, name: _Optional[str] = ..., probability: _Optional[float] = ..., logprob: _Optional[float] = ..., tokens: _Optional[_Iterable[_Union[TokenLogprob, _Mapping]]] = ..., uncalibrated_probability: _Optional[float] = ..., score: _Optional[float] = ..., channel_logprob: _Optional[float] = ..., estimated: _Optional[bool] = ..., channel_estimated: _Optional[bool] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("prompt_tokens", "cached_prompt_tokens", "engine_reads")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ENGINE_READS_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    cached_prompt_tokens: int
    engine_reads: int
    def __init__(self, prompt_tokens: _Optional[int] = ..., cached_prompt_tokens: _Optional[int] = ..., engine_reads: _Optional[int] = ...) -> None: ...

class Classification(_message.Message):
    __slots__ = ("top_label", "labels", "label_mass", "entropy", "margin", "top_alternatives", "decision", "usage", "mode", "calibration", "truncated", "selected_labels", "method")
    TOP_LABEL_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    LABEL_MASS_FIELD_NUMBER: _ClassVar[int]
    ENTROPY_FIELD_NUMBER: _ClassVar[int]
    MARGIN_FIELD_NUMBER: _ClassVar[int]
    TOP_ALTERNATIVES_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    SELECTED_LABELS_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    top_label: str
    labels: _containers.RepeatedCompositeFieldContainer[LabelScore]
    label_mass: float
    entropy: float
    margin: float
    top_alternatives: _containers.RepeatedCompositeFieldContainer[TokenLogprob]
    decision: Decision
    usage: Usage
    mode: ScoringMode
    calibration: Calibration
    truncated: bool
    selected_labels: _containers.RepeatedScalarFieldContainer[str]
    method: ScoringMethod
    def __init__(self, top_label: _Optional[str] = ..., labels: _Optional[_Iterable[_Union[LabelScore, _Mapping]]] = ..., label_mass: _Optional[float] = ..., entropy: _Optional[float] = ..., margin: _Optional[float] = ..., top_alternatives: _Optional[_Iterable[_Union[TokenLogprob, _Mapping]]] = ..., decision: _Optional[_Union[Decision, str]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., mode: _Optional[_Union[ScoringMode, str]] = ..., calibration: _Optional[_Union[Calibration, str]] = ..., truncated: _Optional[bool] = ..., selected_labels: _Optional[_Iterable[str]] = ..., method: _Optional[_Union[ScoringMethod, str]] = ...) -> None: ...
