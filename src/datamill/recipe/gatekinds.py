"""Dashboard and safety gates: their names, options, default bands, and the data files they read.

A dashboard gate (``{dashboard: NAME, field: F, warn: X, critical: Y}``) measures one metric of
seed 003's quality dashboard and grades it healthy / warning / critical against two bounds; a
safety gate (``{safety: stereotypes | determinism | fairness, ...}``) passes or fails with its
violations named. This module holds what a recipe may say about them (checked when the recipe
loads, so errors point at a line) and the formats of the files they read: stereotype pattern
packs and polarity lexicons (YAML). The metrics themselves live in :mod:`datamill.quality.board`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Direction = Literal["higher", "lower"]


@dataclass(frozen=True)
class Kind:
    """One dashboard metric: which way is better, its default bounds, the options it takes."""

    direction: Direction
    warn: float
    critical: float
    options: frozenset[str]
    needs_field: bool = True
    one_field: bool = False
    defaults: dict[str, Any] = field(default_factory=dict)
    warn_ratio: float | None = None  # a default warn bound at this share of the critical one


# Bounds: "higher" is healthy above warn, critical below critical, warning between (inclusive);
# "lower" is the mirror. Seed 003's collapse table gives opening entropy, repair rate and the
# pollyanna score; trigram repetition's 10% is its dashboard threshold; the rest are ours
# (docs/quality.md, "Dashboard and safety gates", says why each sits where it does).
DASHBOARD: dict[str, Kind] = {
    "opening_entropy": Kind("higher", 2.0, 1.5, frozenset({"words", "sample"}), defaults={"sample": 2000}),
    "trigram_repetition": Kind(
        "lower", 0.10, 0.20, frozenset({"threshold", "sample"}), defaults={"threshold": 0.05, "sample": 2000}
    ),
    "mattr": Kind("higher", 0.65, 0.50, frozenset({"window", "sample"}), defaults={"window": 50, "sample": 2000}),
    "starter_variety": Kind(
        "higher", 0.30, 0.15, frozenset({"words", "sample"}), defaults={"words": 2, "sample": 2000}
    ),
    "anchor_share": Kind(
        "lower", 0.04, 0.05, frozenset({"top", "max_share"}), one_field=True, defaults={"top": 50}, warn_ratio=0.8
    ),
    "rare_anchor_compliance": Kind("higher", 0.50, 0.35, frozenset({"top"}), one_field=True, defaults={"top": 50}),
    "anchor_region_mi": Kind("higher", 0.80, 0.60, frozenset({"by"}), one_field=True),
    "near_dup_uniqueness": Kind(
        "higher", 0.98, 0.90, frozenset({"threshold", "sample"}), defaults={"threshold": 0.8, "sample": 20000}
    ),
    "repair_rate": Kind("lower", 0.10, 0.20, frozenset(), needs_field=False),
    "pollyanna": Kind(
        "lower",
        0.70,
        0.85,
        frozenset({"threshold", "sample", "languages", "lexicon"}),
        defaults={"threshold": 0.05, "sample": 2000},
    ),
}
DashboardName = Literal[
    "opening_entropy",
    "trigram_repetition",
    "mattr",
    "starter_variety",
    "anchor_share",
    "rare_anchor_compliance",
    "anchor_region_mi",
    "near_dup_uniqueness",
    "repair_rate",
    "pollyanna",
]
SafetyName = Literal["stereotypes", "determinism", "fairness"]
SAFETY_OPTIONS: dict[str, frozenset[str]] = {
    "stereotypes": frozenset({"field", "languages", "patterns", "max_share"}),
    "determinism": frozenset({"protected", "attributes", "max_share", "min_group"}),
    "fairness": frozenset({"attribute", "table", "weight", "given", "tolerance", "min_expected"}),
}
SAFETY_REQUIRED: dict[str, tuple[str, ...]] = {
    "stereotypes": ("field",),
    "determinism": ("protected", "attributes"),
    "fairness": ("attribute", "table"),
}
SAFETY_DEFAULTS: dict[str, dict[str, Any]] = {
    "stereotypes": {"max_share": 0.0},
    "determinism": {"max_share": 0.5, "min_group": 30},
    "fairness": {"weight": "count", "tolerance": 0.15},
}
LANGUAGES = ("en", "ro")
# Every option a dashboard or safety gate may take (GateSpec fields), so a metric or content gate
# that names one is refused rather than silently ignoring it.
ALL_OPTIONS = (
    "field",
    "warn",
    "critical",
    "words",
    "sample",
    "threshold",
    "window",
    "top",
    "max_share",
    "by",
    "languages",
    "lexicon",
    "patterns",
    "protected",
    "attributes",
    "min_group",
    "attribute",
    "table",
    "weight",
    "given",
    "tolerance",
    "min_expected",
)
_GENERAL = frozenset(
    {
        "metric",
        "min",
        "max",
        "check",
        "spans",
        "context",
        "question",
        "judge",
        "column",
        "min_mean_score",
        "max_invalid_rate",
    }
)


def _set(spec: Any, name: str) -> bool:
    value = getattr(spec, name)
    return value is not None and value != [] and value != {}


def validate(spec: Any) -> None:
    """Raise ValueError (one clear sentence) for a dashboard or safety gate that cannot work.

    ``spec`` is a GateSpec; only its fields are read, nothing is changed, so a gate dumped into a
    manifest loads back the same.
    """
    if spec.dashboard is not None and spec.safety is not None:
        raise ValueError("expected one of dashboard or safety, not both")
    kind_name = spec.dashboard or spec.safety
    label = f"dashboard {kind_name}" if spec.dashboard else f"safety {kind_name}"
    general = sorted(k for k in _GENERAL if _set(spec, k))
    if general:
        raise ValueError(
            f"{label}: takes no {general[0]}: (a {label.split()[0]} gate grades itself; "
            "see docs/quality.md, Dashboard and safety gates)"
        )
    if spec.dashboard is not None:
        kind = DASHBOARD[spec.dashboard]
        allowed = kind.options | {"field", "warn", "critical"}
    else:
        allowed = SAFETY_OPTIONS[spec.safety]
        for need in SAFETY_REQUIRED[spec.safety]:
            if not _set(spec, need):
                raise ValueError(f"{label}: expected {need}: ({_WHAT[need]})")
    extra = [k for k in ALL_OPTIONS if _set(spec, k) and k not in allowed]
    if extra:
        raise ValueError(f"{label}: takes no {extra[0]}: (its options: {', '.join(sorted(allowed))})")
    if spec.dashboard is not None:
        _validate_dashboard(spec, label, DASHBOARD[spec.dashboard])


_WHAT = {
    "field": "the text field(s) to scan, e.g. [persona, hobbies]",
    "protected": "the protected fields, e.g. [ethnicity, religion]",
    "attributes": "the fields no protected group may be decided by, e.g. [occupation, education]",
    "attribute": "the field whose shares are compared with the table",
    "table": "a CSV file of target weights, relative to the recipe",
}


def _validate_dashboard(spec: Any, label: str, kind: Kind) -> None:
    fields = spec.field_list
    if kind.needs_field and not fields:
        raise ValueError(f"{label}: expected field: (the field it measures)")
    if kind.one_field and len(fields) > 1:
        raise ValueError(f"{label}: expected one field, got {len(fields)}; give one gate per field")
    if spec.dashboard == "anchor_region_mi" and not spec.by:
        raise ValueError(f"{label}: expected by: (the field anchors should depend on, e.g. region)")
    if spec.max_share is not None and spec.critical is not None:
        raise ValueError(f"{label}: max_share is its critical bound; give one of max_share and critical")
    warn, critical = bounds(spec)
    if kind.direction == "higher" and critical > warn:
        raise ValueError(f"{label}: higher is better, so expected critical ({critical:g}) <= warn ({warn:g})")
    if kind.direction == "lower" and critical < warn:
        raise ValueError(f"{label}: lower is better, so expected warn ({warn:g}) <= critical ({critical:g})")


def bounds(spec: Any) -> tuple[float, float]:
    """(warn, critical) of a dashboard gate: its own, else the defaults."""
    kind = DASHBOARD[spec.dashboard]
    critical = spec.critical if spec.critical is not None else spec.max_share
    warn = spec.warn if spec.warn is not None else kind.warn
    if spec.warn is None and critical is not None and kind.warn_ratio is not None:
        warn = critical * kind.warn_ratio
    if critical is None:
        critical = kind.critical
        if spec.warn is not None and (warn > critical if kind.direction == "lower" else warn < critical):
            critical = warn  # a warn bound past the default critical one: no warning band, not an error
    elif spec.warn is None and (warn > critical if kind.direction == "lower" else warn < critical):
        warn = critical  # a critical bound inside the default warning band moves the warning band with it
    return float(warn), float(critical)


def option(spec: Any, name: str) -> Any:
    """A dashboard or safety gate's option, or its default."""
    value = getattr(spec, name)
    if value is not None:
        return value
    if spec.dashboard is not None:
        return DASHBOARD[spec.dashboard].defaults.get(name)
    return SAFETY_DEFAULTS.get(spec.safety or "", {}).get(name)


# -- data files: stereotype pattern packs and polarity lexicons ---------------------------------

# Diacritics folded one character to one, so offsets in the folded text are offsets in the original.
FOLD = str.maketrans("ăâîșşțţĂÂÎȘŞȚŢáàäéèëíìïóòöőúùüűçñ’", "aaissttAAISSTTaaaeeeiiioooouuuucn'")
WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")


@dataclass(frozen=True)
class PatternPack:
    """Stereotype claims of one language: patterns with ``{group}`` and ``{trait}`` expanded."""

    language: str
    groups: dict[str, tuple[str, ...]]
    traits: tuple[str, ...]
    patterns: tuple[str, ...]

    def merged(self, other: PatternPack) -> PatternPack:
        groups = {k: tuple(v) for k, v in self.groups.items()}
        for k, v in other.groups.items():
            groups[k] = tuple(dict.fromkeys((*groups.get(k, ()), *v)))
        return PatternPack(
            self.language,
            groups,
            tuple(dict.fromkeys((*self.traits, *other.traits))),
            tuple(dict.fromkeys((*self.patterns, *other.patterns))),
        )

    def compiled(self) -> list[tuple[re.Pattern[str], dict[str, str]]]:
        """One regex per pattern (case-insensitive, over diacritic-folded text), and which group
        category each group word belongs to."""
        category = {_word_key(w): cat for cat, words in self.groups.items() for w in words}
        group = _alternation([w for words in self.groups.values() for w in words])
        trait = _alternation(list(self.traits))
        out = []
        for p in self.patterns:
            src = re.sub(r"(?<!\\) ", r"\\s+", p.translate(FOLD))  # a space: any run of whitespace
            src = src.replace("{group}", f"(?P<group>{group})").replace("{trait}", f"(?P<trait>{trait})")
            out.append((re.compile(rf"(?<![^\W_]){src}(?![^\W_])", re.IGNORECASE), category))
        return out


def _word_key(word: str) -> str:
    return word.translate(FOLD).lower().rstrip("*")


def _alternation(words: list[str]) -> str:
    """A regex alternation of ``words`` (folded, longest first); ``*`` at a word's end is any letters."""
    keys = sorted({w.translate(FOLD).lower() for w in words}, key=lambda w: (-len(w), w))
    parts = [re.escape(w[:-1]) + r"[^\W_]*" if w.endswith("*") else re.escape(w) for w in keys]
    parts = [p.replace(r"\ ", r"\s+") for p in parts]
    return "|".join(parts) or "(?!)"


class GateFileError(ValueError):
    """A pattern pack or lexicon that cannot be read or does not hold what it should."""


def _yaml(path: Path) -> Any:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        return YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GateFileError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GateFileError(f"{path}: cannot read: {exc}") from None
    except YAMLError as exc:
        raise GateFileError(f"{path}: invalid YAML: {exc}".replace("\n", " ")) from None


def _strings(path: Path, key: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise GateFileError(f"{path}: {key}: expected a list of non-empty strings")
    return tuple(v.strip() for v in value)


def load_patterns(path: str | Path) -> PatternPack:
    """A stereotype pattern pack: ``{language, groups: {CATEGORY: [word...]}, traits: [...], patterns: [...]}``.

    Each pattern is a regular expression where ``{group}`` and ``{trait}`` stand for the lists; it
    must name ``{group}``. Every pattern is compiled here, so a bad one is refused on load.
    """
    p = Path(path)
    data = _yaml(p)
    if not isinstance(data, dict):
        raise GateFileError(f"{p}: expected a mapping with language, groups, traits and patterns")
    unknown = sorted(set(data) - {"language", "groups", "traits", "patterns"})
    if unknown:
        raise GateFileError(f"{p}: unknown key {unknown[0]!r}; expected language, groups, traits, patterns")
    groups_raw = data.get("groups") or {}
    if not isinstance(groups_raw, dict):
        raise GateFileError(f"{p}: groups: expected a mapping of category -> list of group words")
    groups = {str(k): _strings(p, f"groups.{k}", v) for k, v in groups_raw.items()}
    pack = PatternPack(
        str(data.get("language") or p.stem.split(".")[-1]),
        groups,
        _strings(p, "traits", data.get("traits")),
        _strings(p, "patterns", data.get("patterns")),
    )
    for i, pat in enumerate(pack.patterns):
        if "{group}" not in pat:
            raise GateFileError(f"{p}: patterns[{i}]: expected {{group}} in the pattern, got {pat!r}")
        if "{trait}" in pat and not pack.traits:
            raise GateFileError(f"{p}: patterns[{i}] uses {{trait}} but the file has no traits")
    if pack.patterns and not any(pack.groups.values()):
        raise GateFileError(f"{p}: patterns need group words; expected groups: {{CATEGORY: [word, ...]}}")
    try:
        pack.compiled()
    except re.error as exc:
        raise GateFileError(f"{p}: a pattern does not compile: {exc}") from None
    return pack


@dataclass(frozen=True)
class Lexicon:
    """Polarity words; ``*`` at a word's end matches any ending (Romanian inflection)."""

    positive: tuple[str, ...]
    negative: tuple[str, ...]

    def merged(self, other: Lexicon) -> Lexicon:
        return Lexicon(
            tuple(dict.fromkeys((*self.positive, *other.positive))),
            tuple(dict.fromkeys((*self.negative, *other.negative))),
        )


def load_lexicon(path: str | Path) -> Lexicon:
    """A polarity lexicon: ``{positive: [word...], negative: [word...]}``."""
    p = Path(path)
    data = _yaml(p)
    if not isinstance(data, dict) or not ({"positive", "negative"} & set(data)):
        raise GateFileError(f"{p}: expected a mapping with positive: and negative: word lists")
    unknown = sorted(set(data) - {"language", "positive", "negative"})
    if unknown:
        raise GateFileError(f"{p}: unknown key {unknown[0]!r}; expected positive, negative (and language)")
    lex = Lexicon(_strings(p, "positive", data.get("positive")), _strings(p, "negative", data.get("negative")))
    for key, words in (("positive", lex.positive), ("negative", lex.negative)):
        bad = [w for w in words if WORD.fullmatch(w.rstrip("*").translate(FOLD)) is None]
        if bad:
            raise GateFileError(f"{p}: {key}: expected single words (a * at the end for any ending), got {bad[0]!r}")
    return lex


def resolve(path: str, base_dir: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else base_dir / p


def check_files(spec: Any, base_dir: Path) -> tuple[str, str] | None:
    """(option, message) for the first data file of ``spec`` that cannot be used, else None."""
    from datamill.recipe.tables import TableError, load_table

    try:
        if spec.patterns:
            load_patterns(resolve(spec.patterns, base_dir))
        if spec.lexicon:
            load_lexicon(resolve(spec.lexicon, base_dir))
    except GateFileError as exc:
        return ("patterns" if spec.patterns else "lexicon", str(exc))
    if spec.safety == "fairness" and spec.table:
        try:
            table = load_table(resolve(spec.table, base_dir))
        except TableError as exc:
            return "table", str(exc)
        weight = option(spec, "weight")
        given = list(spec.given_map)
        for key, wanted in (("attribute", [spec.attribute]), ("weight", [weight]), ("given", given)):
            missing = [c for c in wanted if c not in table.columns]
            if missing:
                return key, f"{spec.table} has no column {missing[0]!r}; columns: {', '.join(table.columns)}"
        try:
            weights = table.weights(weight)
        except ValueError:
            return "weight", f"{spec.table}: column {weight!r} holds a value that is not a number"
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            return "weight", f"{spec.table}: expected weights >= 0, not all zero, in column {weight!r}"
    return None
