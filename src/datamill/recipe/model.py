"""Pydantic models of a recipe: what a recipe file may say, and nothing else.

Shape checks live here (types, unknown keys, bounds on one field). Checks that need the whole
recipe (the column DAG, templates, quotas against columns) live in :mod:`datamill.recipe.check`,
so every error can still point at the line that caused it.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from datamill.recipe import gatekinds
from datamill.recipe.gatekinds import DashboardName, SafetyName

Scalar = str | int | float | bool

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
COLUMN_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
RESERVED_COLUMNS = frozenset({"sample_id", "slot", "params", "cycle"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


def _check_weights(weights: list[float]) -> list[float]:
    if any(w < 0 for w in weights):
        raise ValueError(f"weights must be >= 0, got {weights}")
    if sum(weights) <= 0:
        raise ValueError("weights must not all be zero")
    return weights


def _scalar(v: Any, what: str) -> Scalar:
    if isinstance(v, (str, int, float, bool)):
        return v
    raise ValueError(f"expected {what} to be a string, number or boolean, got {type(v).__name__}")


class _ColumnBase(_Strict):
    emit: bool = Field(True, description="write this column into records (false: a helper)")


class CategoricalSampler(_ColumnBase):
    """``{sampler: categorical, values: [..], weights: [..]}`` or ``values: {value: weight}``."""

    sampler: Literal["categorical"]
    values: Any
    weights: list[float] | None = None

    @model_validator(mode="after")
    def _normalise(self) -> CategoricalSampler:
        values = self.values
        if isinstance(values, dict):
            if self.weights is not None:
                raise ValueError("give weights either in a values map or as a weights list, not both")
            keys = [_scalar(k, "a value") for k in values]
            weights = []
            for k, w in values.items():
                if isinstance(w, bool) or not isinstance(w, (int, float)):
                    raise ValueError(f"values.{k}: expected a number weight, got {w!r}")
                weights.append(float(w))
            object.__setattr__(self, "values", keys)
            object.__setattr__(self, "weights", _check_weights(weights))
        elif isinstance(values, list):
            if not values:
                raise ValueError("values: expected at least one value")
            object.__setattr__(self, "values", [_scalar(v, "each value") for v in values])
            if self.weights is None:
                object.__setattr__(self, "weights", [1.0] * len(values))
            elif len(self.weights) != len(values):
                raise ValueError(f"weights: expected {len(values)} weights (one per value), got {len(self.weights)}")
            else:
                _check_weights(self.weights)
        else:
            raise ValueError("values: expected a list of values or a {value: weight} map")
        if len(set(map(repr, self.values))) != len(self.values):
            raise ValueError("values: expected distinct values")
        return self


class IntegerSampler(_ColumnBase):
    """``{sampler: integer, low, high}``: a uniform integer in [low, high], both included."""

    sampler: Literal["integer"]
    low: int
    high: int

    @model_validator(mode="after")
    def _bounds(self) -> IntegerSampler:
        if self.low > self.high:
            raise ValueError(f"expected low <= high, got low={self.low} high={self.high}")
        return self


class UniformSampler(_ColumnBase):
    """``{sampler: uniform, low, high}``: a uniform float in [low, high)."""

    sampler: Literal["uniform"]
    low: float
    high: float

    @model_validator(mode="after")
    def _bounds(self) -> UniformSampler:
        if self.low > self.high:
            raise ValueError(f"expected low <= high, got low={self.low} high={self.high}")
        return self


class ConditionalSampler(_ColumnBase):
    """``{sampler: conditional, on: column, table: {value: {choice: weight}}}``."""

    sampler: Literal["conditional"]
    on: str
    table: dict[Scalar, dict[Scalar, float]]

    @field_validator("table")
    @classmethod
    def _rows(cls, table: dict[Scalar, dict[Scalar, float]]) -> dict[Scalar, dict[Scalar, float]]:
        if not table:
            raise ValueError("expected at least one row")
        for key, row in table.items():
            if not row:
                raise ValueError(f"{key}: expected at least one {{choice: weight}}")
            _check_weights(list(row.values()))
        return table


class TableSampler(_ColumnBase):
    """``{sampler: table, table: FILE.csv, weight: count, value: COL, given: {COL: FIELD}}``.

    A row of a weighted CSV table (:mod:`datamill.recipe.tables`), drawn by its weight. With
    ``value`` the column holds that cell; without, the row's cells (all but the weight and the
    ``given`` columns) are fields merged into the record, in table order. ``given`` makes the table
    conditional: only rows whose ``COL`` equals the record's ``FIELD`` (a column, or ``column.key``)
    are drawn from. ``quotas: {NAME: table}`` turns the weights into exact counts instead.
    """

    sampler: Literal["table"]
    table: str = Field(min_length=1, description="CSV file, relative to the recipe")
    weight: str = Field("count", min_length=1, description="the column of weights (counts or shares)")
    value: str | None = Field(None, min_length=1, description="the column whose cell is this column's value")
    given: dict[str, str] = Field(default_factory=dict, description="table column -> record field it must equal")

    @field_validator("given", mode="before")
    @classmethod
    def _given_list(cls, v: Any) -> Any:
        return {g: g for g in v} if isinstance(v, list) else v


class ExpressionColumn(_ColumnBase):
    """``{expr: "a * 2"}``: a Jinja2 expression over earlier columns."""

    expr: str = Field(min_length=1)


class TemplateColumn(_ColumnBase):
    """``{template: "Hello {{ name }}"}``: a Jinja2 template over earlier columns."""

    template: str


class GeneratorColumn(_ColumnBase):
    """``{generator: module:function}``: Python that yields zero or more records per slot.

    ``module`` is an importable module or a ``.py`` file relative to the recipe.
    """

    generator: str = Field(pattern=r"^[^:]+:[A-Za-z_][A-Za-z0-9_]*$")
    params: dict[str, Any] = Field(default_factory=dict)
    inputs: list[str] | None = None


class ModelSpec(_Strict):
    """Where LLM text comes from: ``embedded`` (default, no server) or ``openai`` (any compatible server)."""

    backend: Literal["embedded", "openai"] = "embedded"
    base_url: str | None = None
    model: str | None = None
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    concurrency: int = Field(16, ge=1)
    max_retries: int = Field(5, ge=0)
    timeout_s: float = Field(60.0, gt=0)
    rpm: int | None = Field(None, ge=1, description="requests per minute ceiling")
    tpm: int | None = Field(None, ge=1, description="tokens per minute ceiling")
    max_cost_usd: float | None = Field(None, gt=0, description="stop the run before it spends more than this")
    max_tokens: int | None = Field(None, ge=1, description="stop the run before it uses more tokens than this")
    max_requests: int | None = Field(None, ge=1, description="stop the run before it sends more requests than this")
    price_prompt_per_1k: float | None = Field(None, ge=0)
    price_completion_per_1k: float | None = Field(None, ge=0)
    structured: Literal["auto", "json_schema", "json_object_schema", "json_object", "prompt"] = "auto"
    send_seed: bool = True
    n_ctx: int = Field(2048, ge=128, description="embedded: context window")
    threads: int | None = Field(None, ge=1, description="embedded: llama.cpp threads (default: cores / workers)")
    context_limit: int | None = Field(None, ge=16, description="trim prompts longer than this many tokens")
    extra_body: dict[str, Any] = Field(
        default_factory=dict,
        description="openai: extra fields sent in every request body (server-specific sampling settings)",
    )

    @model_validator(mode="after")
    def _openai_needs_url(self) -> ModelSpec:
        if self.backend == "openai" and not self.base_url:
            raise ValueError("backend openai needs base_url (e.g. http://127.0.0.1:8000/v1)")
        if self.backend == "openai" and not self.model:
            raise ValueError("backend openai needs model (the served model's name)")
        return self


class LLMSpec(_Strict):
    """``llm: {prompt, system, schema, temperature, max_tokens, model, pack}``."""

    prompt: str = Field(min_length=1)
    system: str | None = None
    schema_: dict[str, Any] | str | None = Field(None, alias="schema")
    temperature: float = Field(0.7, ge=0, le=2)
    max_tokens: int = Field(256, ge=1)
    model: dict[str, Any] | None = Field(None, description="per-column override of the recipe's model block")
    pack: int = Field(1, ge=1, description="items per request (shared system prompt)")
    max_repairs: int = Field(2, ge=0)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class LLMColumn(_ColumnBase):
    """``{llm: {prompt: "...", ...}}``: text (or JSON, with a schema) written by a model."""

    llm: LLMSpec


# The judge column's prompt is built in Python from its rubric and fields (never rendered by
# Jinja2), so the LLM spec it derives carries this placeholder as its prompt template.
JUDGE_PROMPT = "(a judge column: the prompt is its rubric and the record's fields)"


def judge_schema(low: int, high: int) -> dict[str, Any]:
    """The JSON schema of a judge's answer on the scale ``[low, high]``.

    A short scale is an ``enum``: grammar-constrained decoding (llama.cpp) enforces an enum but not
    integer bounds, so the embedded model cannot answer 2102 on a 1-5 scale.
    """
    score: dict[str, Any] = {"type": "integer", "minimum": low, "maximum": high}
    if high - low <= 20:
        score["enum"] = list(range(low, high + 1))
    return {
        "type": "object",
        "properties": {
            "score": score,
            "reason": {"type": "string", "minLength": 1, "maxLength": 200},
        },
        "required": ["score", "reason"],
        "additionalProperties": False,
    }


class JudgeColumnSpec(_Strict):
    """``judge: {rubric, scale, fields, model, pack, max_tokens, temperature, system, max_repairs}``."""

    rubric: str = Field(min_length=1, description="what a good record is; sent as is (not a template)")
    scale: tuple[int, int] = Field((1, 5), description="[lowest, highest] score, integers")
    fields: list[str] | None = Field(
        None, min_length=1, description="record fields shown to the judge (default: every earlier emitted column)"
    )
    model: dict[str, Any] | None = Field(None, description="per-column override of the recipe's model block")
    pack: int = Field(1, ge=1, description="records per request (shared system prompt)")
    max_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.0, ge=0, le=2)
    system: str | None = Field(None, description="replaces the default judge persona; the rubric follows it")
    max_repairs: int = Field(2, ge=0)

    @field_validator("scale")
    @classmethod
    def _scale(cls, v: tuple[int, int]) -> tuple[int, int]:
        if v[0] >= v[1]:
            raise ValueError(f"expected [lowest, highest] with lowest < highest, got {list(v)}")
        return v


class JudgeColumn(LLMColumn):
    """``{judge: {rubric: "...", scale: [1, 5], fields: [...]}}``: ``{score, reason}`` asked from a model.

    A judge *is* an LLM column: its ``llm`` spec (schema, sampling, model, packing) is derived from
    the judge block, so the cache, packing, repairs, run-wide limits, estimates, trust and the
    recipe hash treat it like any other. Only the ``judge:`` block is written (``llm`` is excluded
    from dumps), so a dumped recipe loads back as the same judge.
    """

    judge: JudgeColumnSpec
    llm: LLMSpec = Field(default_factory=lambda: LLMSpec.model_validate({"prompt": JUDGE_PROMPT}), exclude=True)

    @model_validator(mode="after")
    def _derive_llm(self) -> JudgeColumn:
        j = self.judge
        spec = LLMSpec.model_validate(
            {"prompt": JUDGE_PROMPT, "system": None, "schema": judge_schema(*j.scale), "temperature": j.temperature,
             "max_tokens": j.max_tokens, "model": j.model, "pack": j.pack, "max_repairs": j.max_repairs}
        )  # fmt: skip
        object.__setattr__(self, "llm", spec)
        return self


VALIDATORS = ("json", "python", "sql")


class ValidateColumn(_ColumnBase):
    """``{validate: json|python|sql|regex:PATTERN, field: NAME}``: ``{ok, error}`` from parsing a field.

    Deterministic and local, so a gate can bound the share of records whose code or data does not
    parse (``max_invalid_rate``). ``field`` is a column, a source column, or ``column.key`` of a
    dict-valued one; ``dialect`` (sql only) is a sqlglot dialect name.
    """

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, serialize_by_alias=True
    )  # ``validate`` would shadow BaseModel.validate: the field is ``validate_``, written ``validate``

    validate_: str = Field(alias="validate")
    field: str = Field(min_length=1)
    dialect: str | None = Field(None, min_length=1, description="sql: a sqlglot dialect (default: generic SQL)")

    @field_validator("validate_")
    @classmethod
    def _kind(cls, v: str) -> str:
        if v.startswith("regex:"):
            try:
                re.compile(v.removeprefix("regex:"))
            except re.error as exc:
                raise ValueError(f"expected a regular expression after regex:, got {v[6:]!r}: {exc}") from None
            return v
        if v not in VALIDATORS:
            raise ValueError(f"expected one of json, python, sql or regex:PATTERN, got {v!r}")
        return v


_SAMPLERS = {"categorical", "integer", "uniform", "conditional", "table"}
_TAG_OF = {
    "CategoricalSampler": "categorical",
    "IntegerSampler": "integer",
    "UniformSampler": "uniform",
    "ConditionalSampler": "conditional",
    "TableSampler": "table",
    "ExpressionColumn": "expr",
    "TemplateColumn": "template",
    "GeneratorColumn": "generator",
    "LLMColumn": "llm",
    "JudgeColumn": "judge",
    "ValidateColumn": "validate",
}
COLUMN_KINDS = ("sampler", "expr", "template", "generator", "llm", "judge", "validate")


def _column_kind(v: Any) -> str | None:
    if isinstance(v, _ColumnBase):  # serialising a validated model
        return _TAG_OF[type(v).__name__]
    if not isinstance(v, dict):
        return None
    present = [k for k in COLUMN_KINDS if k in v]
    if len(present) != 1:
        return None
    kind = present[0]
    if kind == "sampler":
        return v["sampler"] if v["sampler"] in _SAMPLERS else None
    return kind


Column = Annotated[
    Annotated[CategoricalSampler, Tag("categorical")]
    | Annotated[IntegerSampler, Tag("integer")]
    | Annotated[UniformSampler, Tag("uniform")]
    | Annotated[ConditionalSampler, Tag("conditional")]
    | Annotated[TableSampler, Tag("table")]
    | Annotated[ExpressionColumn, Tag("expr")]
    | Annotated[TemplateColumn, Tag("template")]
    | Annotated[GeneratorColumn, Tag("generator")]
    | Annotated[LLMColumn, Tag("llm")]
    | Annotated[JudgeColumn, Tag("judge")]
    | Annotated[ValidateColumn, Tag("validate")],
    Discriminator(
        _column_kind,
        custom_error_type="column_kind",
        custom_error_message=(
            "expected a mapping with exactly one of sampler (categorical, integer, uniform, "
            "conditional, table), expr, template, generator, llm, judge or validate"
        ),
    ),
]

# Union tags in pydantic error locations; the locator drops one where the YAML has no such key
# (``columns.a.llm.llm.prompt`` -> ``columns.a.llm.prompt``).
COLUMN_TAGS = frozenset(
    {
        "categorical",
        "integer",
        "uniform",
        "conditional",
        "table",
        "expr",
        "template",
        "generator",
        "llm",
        "judge",
        "validate",
    }
)


class Output(_Strict):
    """Where records go: one file per committed part."""

    format: Literal["jsonl", "parquet"] = "jsonl"
    compression: Literal["none", "zstd"] = "none"
    part_size: int = Field(1000, ge=1, description="slots per part")


class TextSource(_Strict):
    """Where a content check reads text: a record field, and optionally a regex over it.

    With a pattern, the texts are its matches (the first group that took part in the match, else
    the whole match); without one, the field's whole value. A bare string is shorthand for ``{field: ...}``.
    """

    field: str = Field(min_length=1)
    pattern: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return {"field": v} if isinstance(v, str) else v

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"expected a regular expression, got {v!r}: {exc}") from None
        return v


CONTENT_CHECKS = ("grounded", "relevant", "distinct_spans")


class JudgeSpec(_Strict):
    """``judge: {model: {...}, prompt: ...}``: an LLM says yes or no per span (the ``relevant`` check)."""

    model: ModelSpec
    prompt: str | None = Field(None, description="with {question} and {span}; default: a yes/no relevance question")
    max_spans: int = Field(200, ge=1, description="spans sent to the judge, a deterministic sample")


class GateSpec(_Strict):
    """A bound on a quality metric: ``{metric: tokens.prompt.p90, max: 8000, severity: warn}``.

    A content gate names a ``check`` instead (``grounded``, ``relevant``, ``distinct_spans``) and
    where its spans, context and question are; its metric is the share of spans that pass
    (``content.<check>`` unless ``metric`` names it), bounded by ``min: 1.0`` unless told otherwise.

    Shorthands for judge and validate columns: ``{column: judge, min_mean_score: 3.0}`` is
    ``{metric: columns.judge.mean_score, min: 3.0}``; ``{column: code_ok, max_invalid_rate: 0.05}``
    is ``{metric: columns.code_ok.invalid_rate, max: 0.05}``.

    A dashboard gate (``{dashboard: mattr, field: persona, warn: 0.65, critical: 0.5}``) grades a
    metric of seed 003's dashboard healthy / warning / critical; a safety gate (``{safety:
    stereotypes | determinism | fairness, ...}``) passes or fails with its violations named. Their
    options are checked in :mod:`datamill.recipe.gatekinds`.
    """

    metric: str | None = Field(None, min_length=1)
    min: float | None = None
    max: float | None = None
    severity: Literal["fail", "warn"] = "fail"
    check: Literal["grounded", "relevant", "distinct_spans"] | None = None
    spans: TextSource | None = None
    context: list[TextSource] = Field(default_factory=list)
    question: TextSource | None = None
    min_overlap: float = Field(default=1.0, gt=0, le=1, description="relevant: share of key terms a span names")
    within: Literal["context", "line"] = Field(
        default="context", description="grounded: a span's figures anywhere in the context, or all in one of its lines"
    )
    judge: JudgeSpec | None = None
    column: str | None = Field(default=None, min_length=1, description="shorthand: the judge or validate column")
    min_mean_score: float | None = Field(default=None, description="shorthand: columns.<column>.mean_score >= this")
    max_invalid_rate: float | None = Field(
        default=None, ge=0, le=1, description="shorthand: columns.<column>.invalid_rate <= this"
    )
    # Dashboard and safety gates (datamill.recipe.gatekinds says which options each takes).
    dashboard: DashboardName | None = None
    safety: SafetyName | None = None
    field: str | list[str] | None = Field(default=None, description="dashboard, stereotypes: the field(s) measured")
    warn: float | None = Field(default=None, description="dashboard: the bound between healthy and warning")
    critical: float | None = Field(default=None, description="dashboard: the bound between warning and critical")
    words: int | None = Field(default=None, ge=1, description="opening_entropy: first words of a text; starter_variety")
    sample: int | None = Field(default=None, ge=1, description="text metrics: records in the deterministic sample")
    threshold: float | None = Field(default=None, gt=0, le=1, description="near_dup, pollyanna, trigram")
    window: int | None = Field(default=None, ge=2, description="mattr: words per window")
    top: int | None = Field(default=None, ge=1, description="anchors: how many most common anchors")
    max_share: float | None = Field(default=None, ge=0, le=1, description="anchor_share, determinism, stereotypes")
    by: str | None = Field(default=None, min_length=1, description="anchor_region_mi: the field anchors depend on")
    languages: list[Literal["en", "ro"]] | None = Field(default=None, min_length=1, description="shipped packs")
    lexicon: str | None = Field(default=None, min_length=1, description="pollyanna: a lexicon file")
    patterns: str | None = Field(default=None, min_length=1, description="stereotypes: a pattern file")
    protected: list[str] | None = Field(default=None, min_length=1, description="determinism: protected fields")
    attributes: list[str] | None = Field(default=None, min_length=1, description="determinism: decided-by fields")
    min_group: int | None = Field(default=None, ge=1, description="determinism: smaller groups are skipped")
    attribute: str | None = Field(default=None, min_length=1, description="fairness: the field compared")
    table: str | None = Field(default=None, min_length=1, description="fairness: CSV of target weights")
    weight: str | None = Field(default=None, min_length=1, description="fairness: the table's weight column")
    given: list[str] | dict[str, str] | None = Field(default=None, description="fairness: conditioning columns")
    tolerance: float | None = Field(default=None, gt=0, description="fairness: relative tolerance")
    min_expected: float | None = Field(default=None, ge=0, description="fairness: least count tested")

    @property
    def field_list(self) -> list[str]:
        """``field`` as a list (one name or several)."""
        return [] if self.field is None else [self.field] if isinstance(self.field, str) else list(self.field)

    @property
    def given_map(self) -> dict[str, str]:
        """``given`` as table column -> record field."""
        return {g: g for g in self.given} if isinstance(self.given, list) else dict(self.given or {})

    def _column_shorthand(self) -> None:
        """Turn ``column`` + ``min_mean_score``/``max_invalid_rate`` into a metric and a bound.

        Idempotent, so a gate dumped with its metric and bound set (a manifest) loads back.
        """
        given = [k for k in ("min_mean_score", "max_invalid_rate") if getattr(self, k) is not None]
        if self.column is None:
            if given:
                raise ValueError(f"{given[0]}: expected column: (the judge or validate column it bounds)")
            return
        if self.check is not None:
            raise ValueError("column: a content check takes no column shorthand")
        if len(given) != 1:
            raise ValueError("column: expected exactly one of min_mean_score (a judge column) "
                             "or max_invalid_rate (a validate column)")  # fmt: skip
        judge = given[0] == "min_mean_score"
        stat, bound, other = ("mean_score", "min", "max") if judge else ("invalid_rate", "max", "min")
        metric, value = f"columns.{self.column}.{stat}", getattr(self, given[0])
        clash = self.metric not in (None, metric) or getattr(self, bound) not in (None, value)
        if clash or getattr(self, other) is not None:
            raise ValueError(f"{given[0]}: sets metric {metric} and its {bound} itself; give no metric, min or max")
        object.__setattr__(self, "metric", metric)
        object.__setattr__(self, bound, value)

    @model_validator(mode="after")
    def _bounded(self) -> GateSpec:
        if self.dashboard is not None or self.safety is not None:
            gatekinds.validate(self)
            return self
        named = [k for k in gatekinds.ALL_OPTIONS if getattr(self, k) is not None]
        if named:
            raise ValueError(f"{named[0]}: only dashboard and safety gates take it; expected dashboard: or safety:")
        self._column_shorthand()
        if self.check is None:
            if self.metric is None:
                raise ValueError("expected metric (a bound on a report metric), check (a content check), "
                                 "dashboard (a dashboard metric) or safety (a safety gate)")  # fmt: skip
            if self.min is None and self.max is None:
                raise ValueError("expected min, max or both")
            return self
        if self.spans is None:
            raise ValueError(f"check {self.check}: expected spans: {{field, pattern}} (where the spans are)")
        if self.check in ("grounded", "relevant") and not self.context:
            raise ValueError(f"check {self.check}: expected context: a list of {{field, pattern}}")
        if self.check == "relevant" and self.question is None:
            raise ValueError("check relevant: expected question: {field, pattern}")
        if self.judge is not None and self.check != "relevant":
            raise ValueError("judge: only the relevant check takes a judge")
        if self.metric is None:
            object.__setattr__(self, "metric", f"content.{self.check}" + (".judge" if self.judge else ""))
        if self.min is None and self.max is None:
            object.__setattr__(self, "min", 1.0)
        return self


DedupMethod = Literal["exact", "structural", "minhash", "semantic"]


class DedupSpec(_Strict):
    """``dedup: {method, threshold, fields, rounds, on_exhausted, by}``: applied when a run completes.

    ``method`` may list several methods (``[structural, minhash]``): a record is rejected when any
    of them pairs it with another. ``on_exhausted`` says what becomes of slots still rejected after
    the last round: ``drop`` leaves them out, ``fail`` fails them with the reason (the run exits 1),
    so a quota's count is met exactly or visibly not at all. ``by`` names a field whose values the
    report counts rejections under (e.g. ``category``).
    """

    method: DedupMethod | list[DedupMethod] = "exact"
    threshold: float | None = Field(None, gt=0, le=1, description="minhash: Jaccard; semantic: cosine")
    fields: list[str] | None = None
    rounds: int = Field(3, ge=1)
    on_exhausted: Literal["drop", "fail"] = "drop"
    by: str | None = Field(None, min_length=1)

    @field_validator("method")
    @classmethod
    def _methods(cls, v: Any) -> Any:
        if isinstance(v, list):
            if not v:
                raise ValueError("expected at least one method")
            if len(set(v)) != len(v):
                raise ValueError(f"expected distinct methods, got {v}")
            return v[0] if len(v) == 1 else v
        return v

    @property
    def methods(self) -> list[str]:
        return list(self.method) if isinstance(self.method, list) else [self.method]


class PlannerSpec(_Strict):
    """``planner: {prompt, system, model, ...}``: a model plans the categories before any slot runs.

    Its reply (or a plan file given with ``--plan``) is a list of categories, each with ``name,
    description, count, example_inputs, expectations``; the counts become exact quotas over
    contiguous slot blocks, one per category, and templates see the slot's category as ``plan``.
    """

    prompt: str = Field(min_length=1, description="Jinja2 over params, size and hints")
    system: str | None = None
    model: dict[str, Any] | None = Field(None, description="the planner's model block (default: the recipe's)")
    max_tokens: int = Field(1024, ge=1)
    temperature: float = Field(0.2, ge=0, le=2)
    max_repairs: int = Field(2, ge=0)
    max_categories: int = Field(8, ge=1)


class SourceSpec(_Strict):
    """``source: {path, format, key}``: existing rows, one slot each (see :mod:`datamill.store.source`)."""

    path: str = Field(min_length=1, description="a JSONL, CSV or Parquet file, or a dataset folder")
    format: Literal["auto", "jsonl", "csv", "parquet", "hf"] = "auto"
    key: str | None = Field(None, min_length=1, description="the column whose value is each row's sample_id")
    on_bad_row: Literal["error", "skip"] = Field(
        "error", description="error: stop before writing anything; skip: the row's slot fails with the reason"
    )


FULL_PROFILE = "internal_full"  # the export profile that keeps every field, declared or not


class ExportProfile(_Strict):
    """``exports: {NAME: {fields, rename, schema}}``: one shape of the dataset for export.

    ``fields`` keeps those fields, in that order (default: every field); ``rename`` maps a field
    to its exported name; ``schema`` is a JSON schema (inline, or a ``.json`` file relative to the
    recipe) that every exported record must match. ``internal_full`` keeps everything.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, serialize_by_alias=True)

    fields: list[str] | None = Field(None, min_length=1)
    rename: dict[str, str] = Field(default_factory=dict)
    schema_: dict[str, Any] | str | None = Field(None, alias="schema")

    @field_validator("schema_")
    @classmethod
    def _schema(cls, v: dict[str, Any] | str | None) -> dict[str, Any] | str | None:
        if isinstance(v, str) and not v.endswith(".json"):
            raise ValueError(f"expected a JSON schema, inline or a .json file, got {v!r}")
        if isinstance(v, dict):
            import jsonschema

            try:
                jsonschema.validators.validator_for(v).check_schema(v)
            except jsonschema.SchemaError as exc:
                raise ValueError(f"not a valid JSON schema: {exc.message}") from None
        return v

    @model_validator(mode="after")
    def _names(self) -> ExportProfile:
        if self.fields is not None:
            if len(set(self.fields)) != len(self.fields):
                raise ValueError(f"fields: expected distinct names, got {self.fields}")
            dropped = [k for k in self.rename if k not in self.fields]
            if dropped:
                raise ValueError(f"rename: {dropped[0]!r} is not in fields, so it is not exported")
            out = [self.rename.get(f, f) for f in self.fields]
            if len(set(out)) != len(out):
                raise ValueError("rename: two fields would be exported under one name")
        if len(set(self.rename.values())) != len(self.rename):
            raise ValueError("rename: two fields would be exported under one name")
        return self


class ReleaseSpec(_Strict):
    """``release: {...}``: what ``datamill release`` writes into the dataset card and Hub folder."""

    profiles: list[str] | None = Field(
        None, min_length=1, description="export profiles released as configs (default: every one, then internal_full)"
    )
    license: str = Field("unknown", min_length=1, description="a Hub license id (apache-2.0, cc-by-4.0, ...)")
    language: list[str] = Field(default_factory=lambda: ["en"])
    task_categories: list[str] = Field(default_factory=lambda: ["text-generation"])
    tags: list[str] = Field(default_factory=list)
    pretty_name: str | None = None
    description: str | None = Field(None, description="what the dataset is for, the card's first paragraph")
    limitations: list[str] = Field(default_factory=list, description="known limitations, added to the measured ones")


class Recipe(_Strict):
    """A dataset declaration, validated."""

    name: str = Field(pattern=NAME_PATTERN)
    version: str = "1"
    seed: int = Field(0, ge=0)
    source: SourceSpec | None = None
    size: int = Field(0, description="slots; with a source, defaults to its number of rows")
    params: dict[str, Any] = Field(default_factory=dict)
    columns: dict[str, Column] = Field(min_length=1)
    quotas: dict[str, dict[Scalar, float] | Literal["table"]] = Field(default_factory=dict)
    cycles: dict[str, list[Any]] = Field(default_factory=dict)
    output: Output = Field(default_factory=lambda: Output.model_validate({}))
    model: ModelSpec | None = None
    gates: list[GateSpec] = Field(default_factory=list)
    dedup: DedupSpec | None = None
    planner: PlannerSpec | None = None
    exports: dict[str, ExportProfile] = Field(default_factory=dict)
    release: ReleaseSpec | None = None

    @field_validator("exports")
    @classmethod
    def _exports(cls, v: dict[str, ExportProfile]) -> dict[str, ExportProfile]:
        for name, profile in v.items():
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"expected profile names of letters, digits, _ . -, got {name!r}")
            if name == FULL_PROFILE and (profile.fields is not None or profile.rename):
                raise ValueError(f"{FULL_PROFILE} keeps every field as it is; give fields and rename another name")
        return v

    @field_validator("release")
    @classmethod
    def _release(cls, v: ReleaseSpec | None, info: ValidationInfo) -> ReleaseSpec | None:
        known = [*(info.data.get("exports") or {}), FULL_PROFILE]
        for name in (v.profiles or []) if v is not None else []:
            if name not in known:
                raise ValueError(f"profiles: {name!r} is not an export profile (profiles: {', '.join(known)})")
        return v

    @field_validator("size")
    @classmethod
    def _size(cls, v: int, info: ValidationInfo) -> int:
        if v < 1 and not (v == 0 and info.data.get("source") is not None):  # 0 with a source: every row
            raise ValueError(f"Input should be greater than or equal to 1, got {v}")
        return v

    @model_validator(mode="after")
    def _sized(self) -> Recipe:
        if self.size == 0 and self.source is None:
            raise ValueError("size: required (or a source: block, whose rows are the slots)")
        return self

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, v: Any) -> Any:
        return str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
