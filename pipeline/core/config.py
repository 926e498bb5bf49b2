"""params.yaml → typed, frozen, validated configuration.

`load_params(path)` reads the file once and returns a `Params`; every stage receives
the part it needs as an argument. Validation collects *every* problem with its key
path (`train.lr: expected a number, got 'fast'`) and raises one `ParamsError`.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from pipeline.core import plugins as plugin_modules
from pipeline.core.errors import ObcpError
from pipeline.core.registry import METHODS, ORACLES, STRATEGIES

DATASETS = ("digits", "glyphs", "cifar10", "cifar100", "imagefolder", "folder")
FOLDER_ONLY = ("classes", "val", "initial_labels", "image_size", "skip_unreadable")  # dataset keys that only `folder` reads
ARCHS = ("smallcnn", "resnet18_cifar", "resnet50", "vgg16")
WINDOWS = ("since_query", "across_queries")  # Eq. 7 window rules (pipeline/method/schedule.py)
BACKENDS = ("auto", "gloo", "nccl")
VIEW_BACKENDS = ("auto", "numba", "torch")
HISTORY_VIEWS = ("strong", "weak", "clean")  # the forward pass whose softmax feeds Eq. 7's history
SUP_VIEWS = ("strong", "weak")  # the view of the classification terms (L_sup, L_neg, the one-bit student)


class ParamsError(ObcpError):
    """params.yaml has one or more problems; the message lists each with its key path."""

    def __init__(self, problems: list[str], source: str = "params.yaml"):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"{source} is invalid ({len(problems)} problem{'s' * (len(problems) > 1)}):\n{lines}\n"
            "Fix these keys (see the comments in params.yaml for allowed values) and run again."
        )


class UnknownArmError(ObcpError):
    """An arm name (`--arm`, a stage's argument) that is not a key of `arms` in params.yaml.
    params.yaml itself is fine, so this is not a `ParamsError`."""

    def __init__(self, name: str, known: tuple[str, ...]):
        import difflib

        self.name, self.known = name, known
        lower = {k.lower(): k for k in known}
        close = difflib.get_close_matches(name.lower(), list(lower), n=1)
        hint = f" Did you mean {lower[close[0]]!r}?" if close else ""
        super().__init__(
            f"unknown arm {name!r}: params.yaml has no arm named {name!r} (known: {', '.join(known)}).{hint} "
            f"Fix: pass one of the known arms, e.g. `--arm {known[0] if known else 'obcp'}`, or add it under "
            "`arms:` in params.yaml."
        )


@dataclass(frozen=True)
class DatasetParams:
    name: str = "digits"
    root: str = "data/raw"  # raw downloads (cifar*) or the train/ + val/ folder (imagefolder)
    download: bool = False  # cifar*: fetch into `root` when missing
    jpeg_quality: int = 90  # large images are stored as JPEG with this quality
    hflip: bool = False  # horizontal flips in augmentation (off for digits)
    # `folder` (your own unlabeled images under `root`, pipeline/data/folder.py):
    classes: Union[str, tuple[str, ...]] = ""  # a classes.txt file (one name a line) or a list of names
    val: str = ""  # optional labeled folder val/<class>/* for measuring accuracy
    initial_labels: str = ""  # optional CSV (path or file name, class) giving I^S; else the annotator labels it
    image_size: int = 32  # every image is center-cropped to a square and resized to this side
    skip_unreadable: bool = False  # leave out images that cannot be decoded (listed) instead of stopping


@dataclass(frozen=True)
class BudgetParams:
    initial: Union[int, float] = 100  # |I^S|: a count, or a fraction of the train set (float ≤ 1)
    class_balanced: bool = True  # draw I^S with as equal a count per class as possible
    one_bit: Union[int, float, None] = 400  # |T^O| over all cycles: a count, or a fraction of the train set
    labeled_pool: Union[int, float, None] = None  # |P^L| (count or fraction); with one_bit: null, |T^O| = (|P^L| − |I^S|)·log2 C


@dataclass(frozen=True)
class ModelParams:
    arch: str = "smallcnn"
    width: int = 32  # channel width of smallcnn (ignored by the torchvision backbones)
    proj_dim: int = 128  # size of the L2-normalised projection the contrastive terms compare


@dataclass(frozen=True)
class TrainParams:
    stage1_epochs: int = 20  # stage 1 (pretrain): L_sup + λ_ctr·L_c.u on I^S and the unlabeled pool
    stage2_epochs: int = 20  # split evenly over the query cycles
    batch_size: int = 64  # labeled batch B_l
    unlabeled_ratio: int = 1  # μ: unlabeled batch B_u = μ·B_l
    lr: float = 0.03  # SGD learning rate, a cosine over stage 1 + stage 2
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 5e-4  # SGD weight decay
    num_workers: int = 1
    cpu_threads: int = 1  # torch intra-op threads per process on CPU; fixed, so results do not depend on the machine
    amp: bool = True  # mixed precision on GPU: float16 autocast + GradScaler
    view_backend: str = "auto"  # who makes the loop's views: auto (numba on CPU, torch on GPU) | numba | torch
    cpu_amp: bool = False  # on CPU: bfloat16 autocast + GradScaler, the GPU's AMP path (for tests)
    sup_view: str = "strong"  # the view of L_sup and L_neg: strong (MoCo) | weak (shift + flip)


@dataclass(frozen=True)
class ContrastiveParams:
    queue_size: int = 256  # K
    temperature: float = 0.2  # τ
    momentum: float = 0.999  # EMA of the key encoder
    hard_negatives: int = 128  # N < K: queue entries replaced by denied-class bank keys


@dataclass(frozen=True)
class LossParams:
    lambda_ctr: float = 0.1  # λ_ctr: weight of the contrastive terms L_c.u + L_c.l + L_c.n
    lambda_neg: float = 0.1  # λ_neg: weight of the negative loss L_neg (Eq. 6)


@dataclass(frozen=True)
class SelectionParams:
    m: int = 30  # epochs averaged into p̃ (Eq. 7)
    t: int = 5  # most recent epochs whose log q enter Eq. 7
    window: str = "since_query"  # since_query: windows stop at the previous query | across_queries: they reach back
    history_view: str = "strong"  # strong: in-loop view 1 | weak, clean: eval pass at the end of each window epoch
    value_yes: float = 0.0  # expected_gain: top-1 points gained per yes (measured by the all_yes arm)
    value_no: float = 0.0  # expected_gain: top-1 points gained per no (measured by the all_no arm)


@dataclass(frozen=True)
class OnebitParams:
    """The one-bit baseline's Mean-Teacher settings (Hu et al. 2020), in our loss's normalisation."""

    consistency: float = 10.0  # λ_cons of mean_B Σ_c (p_s − p_t)² (theirs: --consistency 1000 / C = 100)
    rampup_epochs: int = 5  # sigmoid ramp-up of λ_cons over the first stage-2 epochs (0: none)
    ema_decay: float = 0.97  # EMA decay of the teacher (our key encoder) in stage 2


@dataclass(frozen=True)
class BaselineParams:
    """Settings of the conventional active learners' strategies (docs/baselines.md); only the arms
    whose strategy reads a setting are redone when it changes (`Strategy.own_params`)."""

    mc_samples: int = 20  # T: dropout forward passes per candidate (mc_dropout, bald)
    dropout: float = 0.5  # p: dropout on the penultimate features before the classifier (mc_dropout, bald)
    ensemble: int = 5  # E: independently seeded models (varratio)
    typiclust_max_clusters: int = 500  # TypiClust: k-means clusters = min(|labeled| + k, this)
    typiclust_knn: int = 20  # TypiClust: neighbours in the typicality (capped at half the cluster)
    typiclust_min_cluster: int = 5  # TypiClust: clusters of at most this size are never picked from
    vaal_epochs: int = 10  # VAAL: passes over the unlabeled pool training the VAE and discriminator
    vaal_latent: int = 32  # VAAL: latent dimension
    ll4al_weight: float = 1.0  # LL4AL: λ of the loss-prediction loss
    ll4al_margin: float = 1.0  # LL4AL: margin ξ of the ranking loss
    ll4al_joint: float = 0.6  # LL4AL: share of each cycle's epochs whose head gradient reaches the backbone


@dataclass(frozen=True)
class OracleParams:
    kind: str = "simulated"  # who answers: simulated (the ground truth) | human (a person)


@dataclass(frozen=True)
class AuditParams:
    """A random audit set per cycle (pipeline/selection/audit.py): the yes-rate of questions about
    uniformly drawn candidates estimates top-1 where no labeled test set exists."""

    size: int = 0  # audit questions per cycle, inside the cycle's one-bit budget (0: none)


@dataclass(frozen=True)
class DdpParams:
    nproc: int = 1  # processes per training stage (torchrun when > 1)
    backend: str = "auto"  # auto (nccl on GPU, gloo on CPU) | gloo | nccl


@dataclass(frozen=True)
class ArmParams:
    """One compared method. The four switches are paper Table 4's ablations."""

    method: str = "obcp"  # how the answers are used: a registered method (pipeline/method/methods.py) or a plugin's
    strategy: str = "obcp"  # which samples are asked (and which class): a registered strategy (pipeline/selection/) or a plugin's
    yes_in_sup: bool = True  # yes samples join L_sup (Table 4: adding in sup.)
    yes_in_ctr: bool = True  # yes samples join the contrastive terms, L_c.l (Table 4: adding in ctr.)
    neg_ctr: bool = True  # no answers give hard negatives in L_c.n (Table 4: neg ctr.)
    neg_loss: bool = True  # no answers enter L_neg (Table 4: neg loss)
    rounds: int = 1  # a cycle's questions asked in this many rounds; a sample answered no is scored again (follow-ups)


@dataclass(frozen=True)
class Params:
    query_times: int = 4
    dataset: DatasetParams = field(default_factory=DatasetParams)
    budget: BudgetParams = field(default_factory=BudgetParams)
    model: ModelParams = field(default_factory=ModelParams)
    train: TrainParams = field(default_factory=TrainParams)
    contrastive: ContrastiveParams = field(default_factory=ContrastiveParams)
    loss: LossParams = field(default_factory=LossParams)
    selection: SelectionParams = field(default_factory=SelectionParams)
    onebit: OnebitParams = field(default_factory=OnebitParams)
    baselines: BaselineParams = field(default_factory=BaselineParams)
    oracle: OracleParams = field(default_factory=OracleParams)
    audit: AuditParams = field(default_factory=AuditParams)
    ddp: DdpParams = field(default_factory=DdpParams)
    seeds: tuple[int, ...] = (0,)  # init_pool … evaluate run once per seed; results: mean ± std over seeds
    plugins: tuple[str, ...] = ()  # the project's own strategies/methods/oracles (pipeline/core/plugins.py)
    arms: dict[str, ArmParams] = field(default_factory=lambda: {"obcp": ArmParams()})

    def arm(self, name: str) -> ArmParams:
        """The arm called `name`; `UnknownArmError` (not a params problem) when there is none."""
        if name not in self.arms:
            raise UnknownArmError(name, tuple(self.arms))
        return self.arms[name]


# --------------------------------------------------------------------------- parsing


def _type_name(tp: Any) -> str:
    if tp is bool:
        return "true/false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    return "an integer or a number"


def _coerce(value: Any, tp: Any, path: str, problems: list[str]) -> Any:
    """Check `value` against a scalar annotation; ints are accepted where floats are."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"{path}: expected {_type_name(tp)}, got {value!r}")
        return value
    ok = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        str: lambda v: isinstance(v, str),
    }[tp](value)
    if not ok:
        problems.append(f"{path}: expected {_type_name(tp)}, got {value!r}")
        return value
    return float(value) if tp is float else value


def _build(cls: type, raw: Any, path: str, problems: list[str]) -> Any:
    """Build dataclass `cls` from a mapping, recording problems instead of raising."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(f"{path}: expected a mapping of keys, got {raw!r}")
        return cls()
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            problems.append(f"{path + '.' if path else ''}{key}: unknown key (known: {', '.join(sorted(names))})")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in raw:
            continue
        sub = f"{path}.{f.name}" if path else f.name
        tp, value = hints[f.name], raw[f.name]
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = _build(tp, value, sub, problems)
        elif f.name == "seeds":
            if not isinstance(value, list) or not value:
                problems.append(f"{sub}: expected a non-empty list of integers, got {value!r}")
            else:
                kwargs[f.name] = tuple(_coerce(v, int, f"{sub}[{i}]", problems) for i, v in enumerate(value))
        elif f.name == "classes" and cls is DatasetParams:
            if isinstance(value, str):
                kwargs[f.name] = value
            elif isinstance(value, list) and value and all(isinstance(v, str) and v.strip() for v in value):
                kwargs[f.name] = tuple(v.strip() for v in value)
            else:
                problems.append(f"{sub}: expected a classes.txt path or a non-empty list of class names, "
                                f"got {value!r}")
        elif f.name == "plugins":
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                problems.append(f"{sub}: expected a list of Python files or module names, got {value!r}")
            else:
                kwargs[f.name] = tuple(value)
        elif f.name == "arms":
            if not isinstance(value, dict) or not value:
                problems.append(f"{sub}: expected a non-empty mapping of arm name → settings, got {value!r}")
            else:
                kwargs[f.name] = {str(k): _build(ArmParams, v, f"{sub}.{k}", problems) for k, v in value.items()}
        else:
            kwargs[f.name] = _coerce(value, tp, sub, problems)
    try:
        return cls(**kwargs)
    except TypeError:
        return cls()


def _check_choice(value: str, choices: tuple[str, ...], path: str, problems: list[str]) -> None:
    if isinstance(value, str) and value not in choices:
        problems.append(f"{path}: unknown value {value!r} (choose one of: {', '.join(choices)})")


def _check_size(value: Any, path: str, problems: list[str], pool: int | None) -> None:
    """A budget is a positive integer count, or a float fraction in (0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return  # already reported as a type problem
    if isinstance(value, float):
        if not 0 < value <= 1:
            problems.append(f"{path}: a fraction must lie in (0, 1] (write a count as an integer), got {value}")
    elif value < 1:
        problems.append(f"{path}: a count must be ≥ 1, got {value}")
    elif pool is not None and value > pool:
        problems.append(f"{path}: {value} is larger than the train pool ({pool} samples)")


def _check_folder(p: Params, problems: list[str]) -> None:
    """`dataset.name: folder` needs its class names and has no ground truth for the train images."""
    d = p.dataset
    if d.name != "folder":
        set_ = [k for k in FOLDER_ONLY if getattr(d, k) != getattr(DatasetParams(), k)]
        if set_:
            problems.append(f"dataset: {', '.join(set_)} only apply to dataset.name: folder (this is {d.name!r}); "
                            "remove them")
        return
    if d.classes == "":
        problems.append("dataset.classes: dataset folder needs the class names: a classes.txt path "
                        "(one name a line) or a list of names")
    elif isinstance(d.classes, tuple):
        dup = sorted({c for c in d.classes if d.classes.count(c) > 1})
        if dup:
            problems.append(f"dataset.classes: duplicate class names {dup}; each class once")
        elif len(d.classes) < 2:
            problems.append(f"dataset.classes: at least 2 classes are needed, got {list(d.classes)}")
    if isinstance(d.image_size, int) and not isinstance(d.image_size, bool) and not 4 <= d.image_size <= 1024:
        problems.append(f"dataset.image_size: must lie in [4, 1024] pixels, got {d.image_size}")
    if p.oracle.kind == "simulated":
        problems.append("oracle.kind: the simulated oracle answers from ground-truth labels, and the images of "
                        "dataset folder have none; use oracle.kind: human (a person answers on `obcp annotate`)")


def resolve_size(value: int | float, pool: int) -> int:
    """A budget count, or a fraction of `pool` rounded to the nearest sample (≥ 1)."""
    if isinstance(value, float):
        return max(1, int(round(value * pool)))
    return int(value)


def resolve_one_bit(budget: BudgetParams, pool: int, num_classes: int | None) -> int:
    """|T^O| in questions: `budget.one_bit` (a count, or a fraction of `pool`), or, with
    `budget.labeled_pool`, (|P^L| − |I^S|)·log2 C rounded (as `pipeline.pool.budget.one_bit_budget`)."""
    if budget.one_bit is not None:
        return resolve_size(budget.one_bit, pool)
    if num_classes is None or num_classes < 2:
        raise ParamsError([f"budget.labeled_pool needs the number of classes (got {num_classes!r})"])
    labeled, initial = resolve_size(budget.labeled_pool, pool), resolve_size(budget.initial, pool)
    return int(round((labeled - initial) * math.log2(num_classes)))


def _validate(p: Params, problems: list[str], pool: int | None, names: bool = True,
              num_classes: int | None = None) -> None:
    pos_int = {
        "query_times": p.query_times,
        "model.width": p.model.width,
        "model.proj_dim": p.model.proj_dim,
        "train.stage1_epochs": p.train.stage1_epochs,
        "train.stage2_epochs": p.train.stage2_epochs,
        "train.batch_size": p.train.batch_size,
        "train.unlabeled_ratio": p.train.unlabeled_ratio,
        "train.num_workers": p.train.num_workers,
        "train.cpu_threads": p.train.cpu_threads,
        "contrastive.queue_size": p.contrastive.queue_size,
        "selection.m": p.selection.m,
        "selection.t": p.selection.t,
        "ddp.nproc": p.ddp.nproc,
        "baselines.mc_samples": p.baselines.mc_samples,
        "baselines.ensemble": p.baselines.ensemble,
        "baselines.typiclust_max_clusters": p.baselines.typiclust_max_clusters,
        "baselines.typiclust_knn": p.baselines.typiclust_knn,
        "baselines.vaal_epochs": p.baselines.vaal_epochs,
        "baselines.vaal_latent": p.baselines.vaal_latent,
    }
    for path, v in pos_int.items():
        if isinstance(v, int) and not isinstance(v, bool) and v < 1:
            problems.append(f"{path}: must be ≥ 1, got {v}")
    for path, v in {
        "train.lr": p.train.lr,
        "contrastive.temperature": p.contrastive.temperature,
    }.items():
        if isinstance(v, float) and not (v > 0 and math.isfinite(v)):
            problems.append(f"{path}: must be > 0, got {v}")
    for path, v in {
        "train.weight_decay": p.train.weight_decay,
        "loss.lambda_ctr": p.loss.lambda_ctr,
        "loss.lambda_neg": p.loss.lambda_neg,
        "contrastive.hard_negatives": p.contrastive.hard_negatives,
        "onebit.consistency": p.onebit.consistency,
        "onebit.rampup_epochs": p.onebit.rampup_epochs,
        "audit.size": p.audit.size,
        "baselines.typiclust_min_cluster": p.baselines.typiclust_min_cluster,
        "baselines.ll4al_weight": p.baselines.ll4al_weight,
        "baselines.ll4al_margin": p.baselines.ll4al_margin,
    }.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v < 0:
            problems.append(f"{path}: must be ≥ 0, got {v}")
    for path, v in {"train.momentum": p.train.momentum, "contrastive.momentum": p.contrastive.momentum,
                    "onebit.ema_decay": p.onebit.ema_decay, "baselines.dropout": p.baselines.dropout}.items():
        if isinstance(v, float) and not 0 <= v < 1:
            problems.append(f"{path}: must lie in [0, 1), got {v}")
    if isinstance(p.dataset.jpeg_quality, int) and not 1 <= p.dataset.jpeg_quality <= 100:
        problems.append(f"dataset.jpeg_quality: must lie in [1, 100], got {p.dataset.jpeg_quality}")
    k, n = p.contrastive.queue_size, p.contrastive.hard_negatives
    if isinstance(k, int) and isinstance(n, int) and k >= 1 and n >= k:
        problems.append(f"contrastive.hard_negatives: N must be < K (queue_size={k}), got {n}")
    m, t = p.selection.m, p.selection.t
    if isinstance(m, int) and isinstance(t, int) and t > m:
        problems.append(f"selection.t: t ({t}) must be ≤ m ({m})")
    if isinstance(p.baselines.ll4al_joint, float) and not 0 <= p.baselines.ll4al_joint <= 1:
        problems.append(f"baselines.ll4al_joint: must lie in [0, 1], got {p.baselines.ll4al_joint}")
    _check_choice(p.dataset.name, DATASETS, "dataset.name", problems)
    _check_choice(p.model.arch, ARCHS, "model.arch", problems)
    _check_choice(p.selection.window, WINDOWS, "selection.window", problems)
    _check_choice(p.ddp.backend, BACKENDS, "ddp.backend", problems)
    _check_choice(p.train.view_backend, VIEW_BACKENDS, "train.view_backend", problems)
    _check_choice(p.selection.history_view, HISTORY_VIEWS, "selection.history_view", problems)
    _check_choice(p.train.sup_view, SUP_VIEWS, "train.sup_view", problems)
    for name, arm in p.arms.items():
        if isinstance(arm.rounds, int) and not isinstance(arm.rounds, bool) and arm.rounds < 1:
            problems.append(f"arms.{name}.rounds: must be ≥ 1, got {arm.rounds}")
    if names:
        _check_choice(p.oracle.kind, ORACLES.names(), "oracle.kind", problems)
        for name, arm in p.arms.items():
            _check_choice(arm.method, METHODS.names(), f"arms.{name}.method", problems)
            _check_choice(arm.strategy, STRATEGIES.names(), f"arms.{name}.strategy", problems)
        _check_arm_objects(p, problems)
    if len(set(p.seeds)) != len(p.seeds):
        problems.append(f"seeds: duplicates in {list(p.seeds)}")
    _check_folder(p, problems)
    _check_size(p.budget.initial, "budget.initial", problems, pool)
    if (p.budget.one_bit is None) == (p.budget.labeled_pool is None):
        problems.append("budget: set exactly one of one_bit (|T^O|) and labeled_pool (|P^L|, from which one_bit is "
                        f"derived); write the other as null (got one_bit={p.budget.one_bit!r}, "
                        f"labeled_pool={p.budget.labeled_pool!r})")
    elif p.budget.one_bit is not None:
        _check_size(p.budget.one_bit, "budget.one_bit", problems, None)
    else:
        _check_size(p.budget.labeled_pool, "budget.labeled_pool", problems, pool)
    if pool is not None and not problems and p.budget.labeled_pool is not None:
        initial, labeled = resolve_size(p.budget.initial, pool), resolve_size(p.budget.labeled_pool, pool)
        if labeled <= initial:
            problems.append(f"budget.labeled_pool: |P^L| = {labeled} must exceed |I^S| = {initial} (budget.initial)")
    one_bit = p.budget.one_bit
    if (not problems and isinstance(p.audit.size, int) and p.query_times >= 1 and one_bit is not None
            and (pool is not None or isinstance(one_bit, int))):
        per_cycle = resolve_size(one_bit, pool or 0) // p.query_times
        if p.audit.size > per_cycle:
            problems.append(
                f"audit.size: {p.audit.size} audit questions per cycle exceed the smallest cycle's one-bit budget "
                f"({per_cycle}); the audit is part of it: lower audit.size or raise budget.one_bit"
            )
    if pool is not None and not problems and (p.budget.one_bit is not None or num_classes is not None):
        initial = resolve_size(p.budget.initial, pool)
        one_bit = resolve_one_bit(p.budget, pool, num_classes)
        if initial >= pool:
            problems.append(f"budget.initial: {initial} leaves no unlabeled samples in a pool of {pool}")
        per_cycle = -(-one_bit // p.query_times)  # the first cycles take the remainder
        if per_cycle > pool - initial:
            problems.append(
                f"budget.one_bit: {per_cycle} questions in one cycle exceed the {pool - initial} unlabeled "
                "samples (a sample is asked at most once per cycle); lower it or raise query_times"
            )
        if one_bit < p.query_times:
            problems.append(
                f"budget.one_bit: {one_bit} questions cannot be split over query_times={p.query_times} cycles"
            )


def _check_arm_objects(p: Params, problems: list[str]) -> None:
    """What an arm's strategy and method objects require: a strategy that reads the ground truth
    (a counterfactual arm) needs an oracle that knows it; follow-up rounds need a per-sample
    strategy (it scores a sample again) and a one-bit method (a *no* leaves classes to ask)."""
    if p.oracle.kind not in ORACLES or any(a.strategy not in STRATEGIES or a.method not in METHODS
                                           for a in p.arms.values()):
        return  # already reported
    oracle = ORACLES.get(p.oracle.kind)
    for name, arm in p.arms.items():
        method = METHODS.get(arm.method)
        strategy = STRATEGIES.get(method.strategy(arm) if hasattr(method, "strategy") else arm.strategy)
        if hasattr(strategy, "check_params"):
            problems += [q for q in strategy.check_params(p) if q not in problems]
        if "truth" in strategy.needs and not getattr(oracle, "knows_truth", False):
            problems.append(
                f"arms.{name}.strategy: {arm.strategy!r} is a counterfactual arm that reads the ground truth, "
                f"which only an oracle that knows it gives; oracle.kind {p.oracle.kind!r} cannot (a person "
                "answers only what is asked). Run it with oracle.kind: simulated, or remove the arm")
        if isinstance(arm.rounds, int) and arm.rounds > 1:
            if not strategy.per_sample:
                problems.append(f"arms.{name}.rounds: follow-up rounds score a sample again on its own; strategy "
                                f"{arm.strategy!r} scores all candidates together; set rounds: 1")
            if getattr(method, "question", "one_bit") != "one_bit":
                problems.append(f"arms.{name}.rounds: method {arm.method!r} asks for full labels, so there is "
                                "nothing to ask again; set rounds: 1")


def parse_params(raw: Any, *, pool_size: int | None = None, source: str = "params.yaml",
                 root: Path | None = None, names: bool = True, num_classes: int | None = None) -> Params:
    """Validate a params mapping into `Params`; raise `ParamsError` listing every problem.

    `pool_size` (the number of train samples) enables the budget-vs-pool checks (with
    `budget.labeled_pool`, those on the derived one-bit budget need `num_classes` too). With
    `names`, the `plugins` are imported (relative to `root`, default the folder of `source`)
    and the arms' strategies and methods and the oracle are checked against the registries
    (which imports them); stages that never run them pass `names=False`, so editing a
    strategy does not rerun `convert` (the `validate` stage checks every name first).
    """
    problems: list[str] = []
    params = _build(Params, raw, "", problems)
    if names and params.plugins:
        base = Path(source).parent if root is None else Path(root)
        try:
            plugin_modules.load(params.plugins, base)
        except ObcpError as exc:
            problems.append(str(exc))
    _validate(params, problems, pool_size, names, num_classes)
    if problems:
        raise ParamsError(problems, source)
    return params


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error in one line: where (line, column) and what, without PyYAML's snippet."""
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return " ".join(str(exc).split())
    mark = exc.problem_mark
    text = f"line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
    if exc.context and exc.context_mark is not None:
        text += f" ({exc.context} that starts at line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1})"
    return text


def load_params(path: str | Path = "params.yaml", *, pool_size: int | None = None, names: bool = True,
                num_classes: int | None = None) -> Params:
    """Read and validate params.yaml (see `parse_params`)."""
    path = Path(path)
    if not path.exists():
        raise ParamsError([f"{path}: file not found (run from the project root, or pass --params)"], str(path))
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ParamsError([f"not valid YAML: {yaml_problem(exc)}"], str(path)) from None
    return parse_params(raw, pool_size=pool_size, source=str(path), names=names, num_classes=num_classes)


def as_dict(obj: Any) -> Any:
    """Params (or a part) → plain JSON-able dict, for manifests and hashes."""
    if dataclasses.is_dataclass(obj):
        return {f.name: as_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: as_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [as_dict(v) for v in obj]
    return obj

