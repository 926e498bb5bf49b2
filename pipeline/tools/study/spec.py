"""The study spec: datasets, seeds, blocks of variants, arms, and the rule that picks the defaults.

A spec is YAML (the committed one is ``pipeline/tools/study/study.yaml``)::

    title: ...                                   # optional, the report's heading
    seeds: [0, 1, 2, 3, 4]                       # every cell runs every seed
    datasets:                                    # name → base params (+ overrides for this dataset only)
      digits: {params: params.yaml}              #   a params file, relative to the project root
      cifar10: {preset: cifar10, overrides: {train.stage1_epochs: 50}}   # or pipeline/presets/<name>.yaml
    rule:                                        # the pre-registered rule (pipeline/tools/study/rule.py)
      block: main                                #   the block whose variants compete
      arm: obcp                                  #   the arm whose final top-1 decides
      text: ...                                  #   the rule in words, quoted verbatim in the report
      datasets: [digits]                         #   optional: the datasets it averages over (default: all)
    blocks:                                      # run in this order
      main:
        why: ...                                 #   why this grid (quoted in the report)
        arms: all                                #   or a list of arm names (keys of `arms` in the params)
        variants:                                #   name → dotted param overrides, the same for every arm
          today: {}
          clean: {selection.history_view: clean}
      confirm:
        base: rule                               #   start from the variant the rule picks
        seeds: [5, 6, 7, 8, 9]                   #   a block's own seeds (default: the spec's)
        variants: {picked: {}}
      fig6:
        base: rule
        arms: [obcp]
        variants: {qt1: {query_times: 1}, qt4: {query_times: 4}}

Two optional top-level keys: ``name`` (a folder name: the study's cells go to
``data/studies/<name>/`` and its report to ``reports/<name>/study.md``, so it never touches
the committed study's) and ``arms`` (a mapping of arm name → arm settings that replaces every
dataset's arms: the same arms, with the same settings, everywhere). The rule picks a variant
(``kind: variants``, the default, as above) or an arm (``kind: arms``)::

    rule:
      kind: arms
      block: main
      arm: obcp                                  #   the reference: today's default
      candidates: [eig, expected_gain]           #   the arms that may replace it
      text: ...

(`pipeline.tools.study.rule.pick_arm`: the candidate with the highest mean final top-1 over
the datasets replaces the reference when its paired difference against it, pooled over every
dataset × seed, has a 95 % t-interval above 0.)

Overrides are dotted keys (``loss.lambda_neg: 0.2``; a nested mapping means the same). ``seeds``
and ``arms`` cannot be overridden: seeds are the spec's (or the block's: e.g. fresh seeds that
test the picked variant on runs the rule never saw), and arms are chosen per block by name,
so no arm ever gets settings of its own (no per-arm tuning). A cell is one dataset × one
variant of one block; its params are the dataset's base, then the dataset's overrides, then
(``base: rule``) the picked variant's overrides, then the variant's own.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import yaml

from pipeline.core.config import ParamsError, parse_params
from pipeline.core.errors import ObcpError

SPEC = Path(__file__).with_name("study.yaml")  # the committed study
PRESETS = Path(__file__).parents[2] / "presets"  # pipeline/presets
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # dataset, block and variant names are folder names
FIXED_KEYS = ("seeds", "arms")  # never overridden by a variant (see the module docstring)


class StudyError(ObcpError):
    """The study spec or a study artifact has a problem; the message names it and the fix."""


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    params: str | None  # a params file relative to the project root, or None with `preset`
    preset: str | None
    overrides: dict[str, Any]  # dotted key → value

    @property
    def source(self) -> str:
        return f"preset {self.preset}" if self.preset else self.params or ""


@dataclass(frozen=True)
class Block:
    name: str
    why: str
    arms: tuple[str, ...] | None  # None: every arm of the dataset's params
    base: str | None  # "rule": on top of the variant the rule picks
    variants: dict[str, dict[str, Any]]  # name → dotted overrides, in spec order
    seeds: tuple[int, ...] | None = None  # None: the spec's seeds


RULE_KINDS = ("variants", "arms")


@dataclass(frozen=True)
class Rule:
    block: str
    arm: str  # kind variants: the arm whose final top-1 decides; kind arms: the reference arm
    text: str
    datasets: tuple[str, ...] = ()  # the datasets the rule averages over; () = every dataset of the spec
    kind: str = "variants"  # variants: pick a variant of the block; arms: pick an arm among `candidates`
    candidates: tuple[str, ...] = ()  # kind arms: the arms that may replace `arm`


@dataclass(frozen=True)
class Spec:
    path: Path
    title: str
    seeds: tuple[int, ...]
    datasets: dict[str, DatasetSpec]
    rule: Rule
    blocks: dict[str, Block]
    name: str | None = None  # the study's own folders (data/studies/<name>/, reports/<name>/); None: the committed
    arms: dict[str, Any] | None = None  # every dataset's arms (replacing its params' arms); None: the params'

    @property
    def rule_datasets(self) -> list[str]:
        """The datasets whose results the rule averages over (`Rule.datasets`, else all)."""
        return list(self.rule.datasets or self.datasets)


@dataclass(frozen=True)
class Cell:
    """One dataset × one variant of one block: an isolated DVC project under data/study/."""

    dataset: str
    block: str
    variant: str
    overrides: dict[str, Any]  # dotted; what this cell changes on top of the dataset's base and overrides
    params: dict[str, Any]  # the cell's whole params.yaml
    arms: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"{self.dataset}/{self.block}/{self.variant}"


# --------------------------------------------------------------------------- dotted keys


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c.d": 2}`` → ``{"a.b": 1, "c.d": 2}`` (mappings become dotted keys)."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def apply_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of the params mapping `raw` with every dotted override set (groups created as needed)."""
    out = copy.deepcopy(dict(raw))
    for key, value in overrides.items():
        node = out
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise StudyError(f"override {key}: {'.'.join(parts[:i + 1])} is {child!r}, not a group of keys. "
                                 "Fix the key in the study spec.")
            node = child
        node[parts[-1]] = copy.deepcopy(value)
    return out


# --------------------------------------------------------------------------- loading


def _overrides(raw: Any, where: str, problems: list[str]) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.append(f"{where}: expected a mapping of dotted param keys to values, got {raw!r}")
        return {}
    flat = flatten({str(k): v for k, v in raw.items()})
    for key in flat:
        head = key.split(".")[0]
        if head in FIXED_KEYS:
            problems.append(f"{where}.{key}: `{head}` cannot be overridden (seeds are the spec's `seeds`; arms "
                            "are chosen per block with `arms:`, so no arm is tuned on its own)")
        elif not all(key.split(".")):
            problems.append(f"{where}.{key}: empty part in the dotted key")
    return flat


def _name(name: Any, where: str, problems: list[str]) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        problems.append(f"{where}: name {name!r} must be letters, digits, '_', '.' or '-' (it names a folder)")
    return str(name)


def _known(raw: dict, allowed: tuple[str, ...], where: str, problems: list[str]) -> None:
    for key in raw:
        if key not in allowed:
            problems.append(f"{where}{'.' if where else ''}{key}: unknown key (known: {', '.join(allowed)})")


def _entries(raw: dict, key: str, allowed: tuple[str, ...], problems: list[str]) -> Iterator[tuple[str, dict, str]]:
    """(name, mapping, key path) of each well-formed entry of the named mapping `raw[key]`."""
    entries = raw.get(key)
    if not isinstance(entries, dict) or not entries:
        problems.append(f"{key}: expected a non-empty mapping of name → {{{', '.join(allowed)}}}")
        return
    for name, entry in entries.items():
        where = f"{key}.{name}"
        _name(name, where, problems)
        if not isinstance(entry, dict):
            problems.append(f"{where}: expected a mapping with keys among {', '.join(allowed)}, got {entry!r}")
            continue
        _known(entry, allowed, where, problems)
        yield str(name), entry, where


def parse_spec(raw: Any, path: Path) -> Spec:
    """Validate a spec mapping; raise one `StudyError` listing every problem with its key path."""
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise StudyError(f"study spec {path} is not a mapping of keys (see pipeline/tools/study/spec.py for the format).")
    _known(raw, ("title", "name", "seeds", "datasets", "arms", "rule", "blocks"), "", problems)
    study_name = raw.get("name")
    if study_name is not None:
        study_name = _name(study_name, "name", problems)
    spec_arms = raw.get("arms")
    if spec_arms is not None and (not isinstance(spec_arms, dict) or not spec_arms
                                  or not all(isinstance(v, dict) for v in spec_arms.values())):
        problems.append(f"arms: expected a non-empty mapping of arm name → settings, got {spec_arms!r}")
        spec_arms = None

    seeds = _seeds(raw.get("seeds"), "seeds", problems)

    datasets: dict[str, DatasetSpec] = {}
    for name, entry, where in _entries(raw, "datasets", ("params", "preset", "overrides"), problems):
        if ("params" in entry) == ("preset" in entry):
            problems.append(f"{where}: give exactly one of `params` (a file) and `preset` (a preset name)")
        datasets[name] = DatasetSpec(name, entry.get("params"), entry.get("preset"),
                                     _overrides(entry.get("overrides"), f"{where}.overrides", problems))

    blocks: dict[str, Block] = {}
    for name, entry, where in _entries(raw, "blocks", ("why", "arms", "base", "variants", "seeds"), problems):
        arms = entry.get("arms", "all")
        if arms != "all" and (not isinstance(arms, list) or not arms or not all(isinstance(a, str) for a in arms)):
            problems.append(f"{where}.arms: expected `all` or a non-empty list of arm names, got {arms!r}")
            arms = "all"
        base = entry.get("base")
        if base not in (None, "rule"):
            problems.append(f"{where}.base: expected `rule` (start from the picked variant) or nothing, got {base!r}")
        variants = entry.get("variants")
        if not isinstance(variants, dict) or not variants:
            problems.append(f"{where}.variants: expected a non-empty mapping of variant name → overrides")
            variants = {}
        parsed = {}
        for vname, over in variants.items():
            _name(vname, f"{where}.variants.{vname}", problems)
            parsed[str(vname)] = _overrides(over, f"{where}.variants.{vname}", problems)
        own = tuple(_seeds(entry["seeds"], f"{where}.seeds", problems)) if "seeds" in entry else None
        blocks[name] = Block(name, str(entry.get("why") or "").strip(), None if arms == "all" else tuple(arms),
                             base, parsed, own)

    rule_raw = raw.get("rule")
    rule = Rule("", "", "")
    if not isinstance(rule_raw, dict):
        problems.append("rule: expected a mapping with `block`, `arm` and `text`")
    else:
        _known(rule_raw, ("block", "arm", "text", "datasets", "kind", "candidates"), "rule", problems)
        kind = rule_raw.get("kind", "variants")
        if kind not in RULE_KINDS:
            problems.append(f"rule.kind: expected one of {', '.join(RULE_KINDS)}, got {kind!r}")
        candidates = rule_raw.get("candidates", [])
        if not isinstance(candidates, list) or not all(isinstance(c, str) for c in candidates):
            problems.append(f"rule.candidates: expected a list of arm names, got {candidates!r}")
            candidates = []
        if kind == "arms":
            block_arms = blocks.get(str(rule_raw.get("block") or ""))
            known = set(spec_arms) if spec_arms is not None else None
            if block_arms is not None and block_arms.arms is not None:
                known = set(block_arms.arms) if known is None else known & set(block_arms.arms)
            if not candidates:
                problems.append("rule.candidates: a rule of kind `arms` needs the arms that may replace `rule.arm`")
            if rule_raw.get("arm") in candidates:
                problems.append("rule.candidates: the reference arm `rule.arm` cannot be a candidate")
            if known is not None:
                missing = [c for c in candidates if c not in known]
                if missing:
                    problems.append(f"rule.candidates: {missing} do not run in block {rule_raw.get('block')!r}")
        elif candidates:
            problems.append("rule.candidates: only a rule of kind `arms` has candidates")
        chosen = rule_raw.get("datasets", [])
        if not isinstance(chosen, list) or not all(isinstance(d, str) for d in chosen):
            problems.append(f"rule.datasets: expected a list of dataset names, got {chosen!r}")
            chosen = []
        unknown = [d for d in chosen if d not in datasets]
        if unknown:
            problems.append(f"rule.datasets: {unknown} are not datasets of the spec (datasets: {list(datasets)})")
        rule = Rule(str(rule_raw.get("block") or ""), str(rule_raw.get("arm") or ""),
                    str(rule_raw.get("text") or "").strip(), tuple(chosen), str(kind), tuple(candidates))
        if not rule.text:
            problems.append("rule.text: the rule in words is required (the report quotes it verbatim)")
        if not rule.arm:
            problems.append("rule.arm: name the arm whose final top-1 decides (e.g. obcp)")
        order = list(blocks)
        if rule.block not in blocks:
            problems.append(f"rule.block: {rule.block!r} is not a block (blocks: {', '.join(order)})")
        else:
            if blocks[rule.block].seeds is not None:
                problems.append(f"blocks.{rule.block}.seeds: the rule's block runs the spec's seeds")
            if blocks[rule.block].base == "rule":
                problems.append(f"blocks.{rule.block}.base: the rule's own block cannot start from the rule's pick")
            block_arms = blocks[rule.block].arms
            if block_arms is not None and rule.arm not in block_arms:
                problems.append(f"rule.arm: {rule.arm!r} does not run in block {rule.block!r} "
                                f"(arms: {list(block_arms)})")
            if spec_arms is not None and rule.arm not in spec_arms:
                problems.append(f"rule.arm: {rule.arm!r} is not one of the spec's arms ({list(spec_arms)})")
            for b in order[:order.index(rule.block)]:
                if blocks[b].base == "rule":
                    problems.append(f"blocks.{b}.base: a block that starts from the rule's pick must come after "
                                    f"the rule's block {rule.block!r}")
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise StudyError(f"study spec {path} is invalid ({len(problems)} problem{'s' * (len(problems) > 1)}):\n"
                         f"{lines}\nFix these keys (the format is in pipeline/tools/study/spec.py) and run again.")
    return Spec(path, str(raw.get("title") or "Study"), tuple(seeds), datasets, rule, blocks, study_name,
                copy.deepcopy(spec_arms))


def _seeds(value: Any, where: str, problems: list[str]) -> list[int]:
    """A non-empty list of distinct integer seeds (problems recorded, [] returned otherwise)."""
    if not isinstance(value, list) or not value or not all(isinstance(v, int) and not isinstance(v, bool)
                                                           for v in value):
        problems.append(f"{where}: expected a non-empty list of integers, got {value!r}")
        return []
    if len(set(value)) != len(value):
        problems.append(f"{where}: duplicates in {value}")
    return value


def load_spec(path: str | Path = SPEC) -> Spec:
    """Read and validate a study spec file (see `parse_spec`)."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"study spec {path} does not exist; pass --spec FILE (the committed one is {SPEC}).")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise StudyError(f"study spec {path} is not valid YAML ({exc}); fix it and run again.") from None
    return parse_spec(raw, path)


# --------------------------------------------------------------------------- cells


def base_params(spec: Spec, dataset: str, root: Path) -> dict[str, Any]:
    """The dataset's params mapping: its file or preset, then its overrides."""
    ds = spec.datasets[dataset]
    path = PRESETS / f"{ds.preset}.yaml" if ds.preset else Path(root) / str(ds.params)
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PRESETS.glob("*.yaml")))
        fix = f"presets: {known}" if ds.preset else "give a params file relative to the project root"
        raise StudyError(f"datasets.{dataset}: {path} does not exist ({fix}). Fix the study spec.")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise StudyError(f"datasets.{dataset}: {path} is not valid YAML ({exc}).") from None
    if not isinstance(raw, dict):
        raise StudyError(f"datasets.{dataset}: {path} is not a params mapping.")
    if spec.arms is not None:  # the spec's arms, the same for every dataset
        raw = {**raw, "arms": copy.deepcopy(spec.arms)}
    return apply_overrides(raw, ds.overrides)


def block_cells(spec: Spec, block: str, root: Path, picked: str | None = None) -> list[Cell]:
    """Every cell of one block (dataset-major, then variants in spec order), params validated.

    `picked`: the rule's variant, required for a ``base: rule`` block. Raises one `StudyError`
    listing every cell whose params are invalid.
    """
    b = spec.blocks[block]
    if b.base == "rule" and picked is None:
        raise StudyError(f"block {block!r} starts from the rule's pick, and the rule has not picked yet.")
    start = spec.blocks[spec.rule.block].variants[picked] if b.base == "rule" and picked else {}
    cells, problems = [], []
    for dataset in spec.datasets:
        base = base_params(spec, dataset, root)
        known = list((base.get("arms") or {}).keys())
        missing = [a for a in (b.arms or ()) if a not in known]
        if missing:
            problems.append(f"{dataset}/{block}: arms {missing} are not in the dataset's params (arms: {known})")
            continue
        arms = tuple(b.arms or known)
        if block == spec.rule.block and spec.rule.arm not in arms:
            problems.append(f"{dataset}/{block}: the rule's arm {spec.rule.arm!r} is not among its arms {list(arms)}")
            continue
        for variant, over in b.variants.items():
            overrides = {**start, **over}
            try:
                params = apply_overrides(base, overrides)
            except StudyError as exc:
                problems.append(f"{dataset}/{block}/{variant}: {exc}")
                continue
            params["seeds"] = list(b.seeds or spec.seeds)
            params["arms"] = {a: base["arms"][a] for a in arms}
            try:
                parse_params(params, source=f"{dataset}/{block}/{variant}")
            except ParamsError as exc:
                problems += [f"{dataset}/{block}/{variant}: {p}" for p in exc.problems]
                continue
            cells.append(Cell(dataset, block, variant, overrides, params, arms))
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise StudyError(f"study spec {spec.path}: {len(problems)} cell problem{'s' * (len(problems) > 1)}:\n"
                         f"{lines}\nFix the overrides (or the datasets' params) and run again.")
    return cells
