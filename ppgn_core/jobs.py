"""Validated requests → conditions and samplers → results: shared by the CLI and the app."""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field

import torch

from .conditions import ClassCondition, Condition, InpaintContext, MultiCondition, UnitCondition, class_index
from .nets.registry import ModelBundle
from .presets import DEFAULT_PRESET, build_sampler, get_preset
from .sampler import AT_TARGET, MAX_ROBUST_K, Sampler, Snapshot

#: caps sized for a 2-core, 24 GiB machine; raise them with the environment variables
MAX_STEPS = int(os.environ.get("PPGN_MAX_STEPS", "2000"))
MAX_CHAINS = int(os.environ.get("PPGN_MAX_CHAINS", "16"))
EPS_LIMITS = {"eps1": (0.0, 10.0), "eps2": (0.0, 1e3), "eps3": (0.0, 100.0), "eps4": (0.0, 1e3),
              "eps1_end": (0.0, 10.0), "lr": (0.0, 10.0), "lr_end": (0.0, 10.0), "robust_blur": (0.0, 3.0),
              "realism": (0.0, 100.0), "p_target": (0.001, 1.0)}
#: the app's log10 ε sliders: this value means "exactly 0"
EPS_OFF_LOG = -18.0


def eps_from_log(v: float) -> float:
    """An ε from its log10 slider value (``EPS_OFF_LOG`` or below: 0)."""
    return 0.0 if v <= EPS_OFF_LOG else 10.0 ** float(v)


def eps_to_log(v: float) -> float:
    """The log10 slider value of an ε, in the sliders' half-decade steps (0: ``EPS_OFF_LOG``)."""
    return EPS_OFF_LOG if v <= 0 else max(EPS_OFF_LOG + 0.5, round(math.log10(v) * 2) / 2)


def eps_slider_linear(preset: str) -> bool:
    """Whether the app's ε1 and ε3 sliders of ``preset`` show ε itself (a denoising chain: ε1 near 1, ε3 a noise
    level) rather than log10 ε (MALA-approx: ε over many decades)."""
    return not get_preset(preset).is_chain


def eps_to_slider(preset: str, v: float) -> float:
    return float(v) if eps_slider_linear(preset) else eps_to_log(v)


def eps_from_slider(preset: str, v: float) -> float:
    return float(v) if eps_slider_linear(preset) else eps_from_log(v)


@dataclass
class SampleRequest:
    """What a user asks for. ``classes`` may hold several names/indices (product of experts)."""

    classes: list[str | int] = field(default_factory=lambda: ["volcano"])
    weights: list[float] | None = None
    neuron: str | None = None
    preset: str = DEFAULT_PRESET
    steps: int = 100
    chains: int = 4
    seed: int = 0
    eps: tuple[float, float, float] | None = None
    eps4: float | None = None
    eps1_end: float | None = None
    lr: float | None = None
    lr_end: float | None = None
    step_form: str | None = None
    snapshot_every: int = 10
    robust_k: int | None = None  # views of x the condition averages over (0: off; None: the preset's)
    robust_blur: float | None = None
    realism: float | None = None  # weight of log D(real|x) (0: off; None: the preset's)
    p_target: float | None = None  # p(class) at which a chain is satisfied (1: never; None: the preset's)
    at_target: str | None = None  # a satisfied chain: "prior" (the prior alone) or "stop" (None: the preset's)

    def validate(self) -> "SampleRequest":
        get_preset(self.preset)
        for name, cap in (("steps", MAX_STEPS), ("chains", MAX_CHAINS)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool):
                raise ValueError(f"{name} must be a whole number, got {v!r}")
            lo = 0 if name == "steps" else 1
            if not lo <= v <= cap:
                raise ValueError(f"{name} must be in {lo}..{cap}, got {v}")
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2 ** 63:
            raise ValueError(f"seed must be a whole number ≥ 0, got {self.seed!r}")
        if not isinstance(self.snapshot_every, int) or self.snapshot_every < 1:
            raise ValueError("snapshot_every must be a whole number ≥ 1")
        if self.eps is not None:
            if len(self.eps) != 3:
                raise ValueError("eps needs three numbers: ε1 ε2 ε3")
            for name, v in zip(("eps1", "eps2", "eps3"), self.eps):
                check_range(name, v)
        for name in ("eps4", "eps1_end", "lr", "lr_end"):
            if getattr(self, name) is not None:
                check_range(name, getattr(self, name))
        if self.robust_k is not None and (not isinstance(self.robust_k, int) or isinstance(self.robust_k, bool)
                                          or not 0 <= self.robust_k <= MAX_ROBUST_K):
            raise ValueError(f"robust_k (views per step) must be a whole number in 0..{MAX_ROBUST_K}, got {self.robust_k!r}")
        for name in ("robust_blur", "realism", "p_target"):
            if getattr(self, name) is not None:
                check_range(name, getattr(self, name))
        if self.at_target is not None and self.at_target not in AT_TARGET:
            raise ValueError(f"at_target must be one of {AT_TARGET}, got {self.at_target!r}")
        if not self.classes and not self.neuron:
            raise ValueError("give a class or a neuron to condition on")
        if self.weights is not None and len(self.weights) != len(self.classes):
            raise ValueError(f"{len(self.weights)} weights for {len(self.classes)} classes")
        return self

    def overrides(self) -> dict:
        o: dict = {}
        if self.eps is not None:
            o.update(eps1=float(self.eps[0]), eps2=float(self.eps[1]), eps3=float(self.eps[2]))
        for name in ("eps4", "eps1_end", "lr", "lr_end", "step_form", "robust_k", "robust_blur", "realism",
                     "p_target", "at_target"):
            if getattr(self, name) is not None:
                o[name] = getattr(self, name)
        if self.lr is not None and self.lr_end is None:  # the preset's step decay, kept in proportion
            o.update(get_preset(self.preset).settings().step_sizes(float(self.lr)))
        return o


def check_range(name: str, value: float) -> float:
    """A finite number inside its slider range, or ValueError saying what is allowed."""
    lo, hi = EPS_LIMITS[name]
    try:
        v = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a number, got {value!r}") from err
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if not lo <= v <= hi:
        raise ValueError(f"{name} must be in [{lo:g}, {hi:g}], got {v:g}")
    return v


def make_condition(bundle: ModelBundle, classes: list[str | int], neuron: str | None = None,
                   weights: list[float] | None = None, mode: str = "log_softmax") -> Condition:
    """Class condition(s) and/or a hidden unit of the bundle's condition network."""
    parts: list[tuple[Condition, float]] = []
    ws = weights or [1.0] * len(classes)
    for c, w in zip(classes, ws):
        parts.append((ClassCondition(bundle.classifier, class_index(c), mode), float(w)))
    if neuron:
        parts.append((UnitCondition(bundle.classifier, neuron), 1.0))
    if not parts:
        raise ValueError("give a class or a neuron to condition on")
    return parts[0][0] if len(parts) == 1 and parts[0][1] == 1.0 else MultiCondition(parts)


def make_sampler(bundle: ModelBundle, req: SampleRequest, context: InpaintContext | None = None,
                 condition: Condition | None = None, **preset_fields) -> Sampler:
    """The request's sampler; ``preset_fields``: a denoising preset's fields (``presets.GUIDED_OVERRIDES``)."""
    req.validate()
    cond = condition or make_condition(bundle, req.classes, req.neuron, req.weights)
    return build_sampler(req.preset, bundle, cond, seed=req.seed, context=context, **req.overrides(), **preset_fields)


def chain_records(first: Snapshot, last: Snapshot, neuron: bool) -> list[dict]:
    """Per-chain start/end values for result.json."""
    out = []
    for i in range(last.image.shape[0]):
        rec: dict = {"chain": i}
        if first.p_class is not None:
            rec["p_class_start"] = float(first.p_class[i])
            rec["p_class"] = float(last.p_class[i])
        if neuron:
            rec["activation_start"] = float(first.condition[i])
            rec["activation"] = float(last.condition[i])
        else:
            rec["objective_start"] = float(first.condition[i])
            rec["objective"] = float(last.condition[i])
        out.append(rec)
    return out


def result_record(req: SampleRequest, sampler: Sampler, snaps: list[Snapshot], seconds: float,
                  device: str) -> dict:
    first, last = snaps[0], snaps[-1]
    preset = get_preset(req.preset)
    s = last.settings
    return {
        "preset": preset.name, "preset_title": preset.title, "paper_eps": list(preset.paper_eps),
        "eps": [s.eps1, s.eps2, s.eps3], "eps4": s.eps4, "step_form": s.step_form, "lr": s.lr, "lr_end": s.lr_end,
        "eps1_end": s.eps1_end, "robust_k": s.robust_k, "robust_blur": s.robust_blur,
        "realism": s.realism, "p_target": s.p_target,
        "at_target": s.at_target, "seed": req.seed,
        "steps": req.steps, "steps_run": last.step, "stopped_early": last.step < req.steps,
        "classes": req.classes, "class_indices": [class_index(c) for c in req.classes], "neuron": req.neuron,
        "weights": req.weights, "chains": chain_records(
            first, last, bool(req.neuron) and not req.classes),
        "recoveries": sampler.recoveries, "seconds": round(seconds, 3), "device": device,
        "condition_input_size": sampler.condition.classifier.input_size,
        "request": asdict(req), "eps_schedule": schedule_changes(sampler.schedule),
        **({"sampler": "guided denoising", "noise_levels": [round(v, 5) for v in sampler.levels],
            "kept_steps": [sn.step for sn in snaps if sn.kept]} if sampler.levels else {}),
    }


def schedule_changes(schedule: list[dict]) -> list[dict]:
    """The settings in force at step 0 and at every step where one of them changed (a live slider):
    the whole schedule, without a row per unchanged step."""
    out: list[dict] = []
    for row in schedule:
        if not out or any(row[k] != out[-1][k] for k in row if k != "step"):
            out.append(row)
    return out


def run_sample(bundle: ModelBundle, req: SampleRequest, start: torch.Tensor | None = None,
               device: str = "cpu", progress: bool = False) -> tuple[list[Snapshot], dict]:
    """Run a full request; returns the snapshots and the result record."""
    sampler = make_sampler(bundle, req)
    z0 = sampler.init(req.chains, device, start)
    t0 = time.time()
    it = sampler.run(z0, req.steps, req.snapshot_every)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, total=req.steps // req.snapshot_every + 2, desc="sampling", unit="snap")
    snaps = list(it)
    return snaps, result_record(req, sampler, snaps, time.time() - t0, device)
