"""``ropetool check``: run llama.cpp on a GGUF and compare its logits with the numpy reference.

The verdict reports how far apart they are (max |diff|, relative error, top-1 agreement, KL
divergence) and, as a negative control, how much the file's rope setting itself moves the
reference's logits, so that a pass means something: if llama.cpp ignored the setting, its logits
would be about that far from the reference, and the check would fail.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ropetool.errors import RopetoolError
from ropetool.rope import RopeParams, make_params

# Relative tolerance (x max|logit|) by the dominant weight type: llama.cpp quantizes activations to
# match the weights in its matrix products (bf16, q8_0), so coarser types need looser bounds.
TOLERANCES = {"F32": 2e-3, "F16": 1e-2, "BF16": 1e-2, "Q8_0": 5e-2}
DEFAULT_TOLERANCE = 1.5e-1
MAX_DEFAULT_TOKENS = 2048


@dataclass
class Comparison:
    max_abs_diff: float
    rel_error: float  # max |diff| / max |reference logit|
    top1_agreement: float
    kl_mean: float
    kl_max: float
    per_position_max_diff: list[float] = field(repr=False)

    @classmethod
    def of(cls, reference: np.ndarray, other: np.ndarray) -> "Comparison":
        reference = reference.astype(np.float64)
        other = other.astype(np.float64)
        diff = np.abs(other - reference)
        scale = float(np.abs(reference).max()) or 1.0
        kl = _kl(reference, other)
        return cls(
            max_abs_diff=float(diff.max()),
            rel_error=float(diff.max() / scale),
            top1_agreement=float(np.mean(reference.argmax(-1) == other.argmax(-1))),
            kl_mean=float(kl.mean()),
            kl_max=float(kl.max()),
            per_position_max_diff=[float(x) for x in diff.max(-1)],
        )


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _kl(p_logits: np.ndarray, q_logits: np.ndarray) -> np.ndarray:
    lp, lq = _log_softmax(p_logits), _log_softmax(q_logits)
    return np.maximum((np.exp(lp) * (lp - lq)).sum(-1), 0.0)


@dataclass
class CheckReport:
    path: str
    architecture: str
    weight_type: str
    method: str
    rope: dict
    device: str
    n_tokens: int
    original_context: int | None
    tolerance: float
    llama_vs_reference: Comparison
    control: str  # what the negative control changed
    control_effect: Comparison  # reference with the setting vs without it
    verdict: str  # "pass", "fail" or "inconclusive"
    lint: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("llama_vs_reference", "control_effect"):
            d[k].pop("per_position_max_diff")
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def summary(self) -> str:
        m, c = self.llama_vs_reference, self.control_effect
        lines = [
            f"{self.path}: {self.architecture}, {self.weight_type} weights, rope {self.method}, "
            f"{self.n_tokens} tokens on {self.device}",
            f"llama.cpp vs reference: max |diff| {m.max_abs_diff:.3g} (relative {m.rel_error:.3g}, tolerance "
            f"{self.tolerance:.3g}), top-1 agreement {m.top1_agreement:.1%}, KL mean {m.kl_mean:.3g} max {m.kl_max:.3g}",
            f"negative control ({self.control}): moves the reference's logits by {c.max_abs_diff:.3g} "
            f"(relative {c.rel_error:.3g}, {c.rel_error / max(m.rel_error, 1e-12):.3g}x the measured difference)",
        ]
        if self.verdict == "pass":
            lines.append(
                f"PASS: llama.cpp matches the reference within {m.max_abs_diff:.2g}; the rope setting itself moves the "
                f"logits by {c.max_abs_diff:.2g}, so this check would see it if llama.cpp ignored it."
            )
        elif self.verdict == "inconclusive":
            lines.append(
                "INCONCLUSIVE: llama.cpp matches the reference, but the rope setting moves the logits by less than the "
                "tolerance at this length, so a pass would say little; use more tokens (--tokens)."
            )
        else:
            lines.append(f"FAIL: llama.cpp differs from the reference by {m.rel_error:.3g} x max|logit| "
                         f"(tolerance {self.tolerance:.3g}).")
            for f in self.lint:
                lines.append(f"  likely cause: {f['message']}")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


def control_for(rope: RopeParams) -> tuple[RopeParams, str]:
    """The same setting with the context extension removed (or, for plain RoPE/ALiBi, a 2x change of it)."""
    if rope.is_alibi:
        if rope.method == "alibi":
            return make_params("alibi-interp", alpha=2.0, max_bias=rope.max_bias), "ALiBi slopes halved"
        return make_params("alibi", max_bias=rope.max_bias), "plain ALiBi instead of " + rope.method
    if rope.method == "none":
        return make_params("linear", base=rope.base, factor=2.0), "RoPE positions interpolated 2x"
    return make_params("none", base=rope.base), f"plain RoPE (base {rope.base:g}) instead of {rope.method}"


def default_tokens(n_vocab: int, original_context: int | None, n: int | None) -> tuple[list[int], list[str]]:
    """A deterministic token sequence, longer than the original context where that is affordable."""
    notes = []
    if n is None:
        L0 = original_context or 256
        n = L0 + max(64, L0 // 4)
        if n > MAX_DEFAULT_TOKENS:
            n = MAX_DEFAULT_TOKENS
            notes.append(f"the default {n} tokens do not exceed the original context ({L0}); pass --tokens to go past it")
    if n < 2:
        raise RopetoolError("--tokens must be at least 2")
    rng = np.random.default_rng(0)
    low = min(4, n_vocab - 1)
    return [int(t) for t in rng.integers(low, n_vocab, size=n)], notes


def _weight_type(reader_tensors) -> str:
    counts: dict[str, int] = {}
    for name, qtype, n_elements in reader_tensors:
        if name.endswith(".weight") and not name.startswith("rope_"):
            counts[qtype] = counts.get(qtype, 0) + n_elements
    return max(counts, key=counts.get) if counts else "F32"


def check_gguf(
    path,
    device: str = "cpu",
    n_tokens: int | None = None,
    text: str | None = None,
    source=None,
    tolerance: float | None = None,
    verbose: bool = False,
) -> CheckReport:
    """Run llama.cpp on ``path`` and compare with the numpy reference (weights from the GGUF or ``source``)."""
    from ropetool.lint import lint_gguf
    from ropetool.llamacpp import runner
    from ropetool.reference import ReferenceModel

    path = Path(path)
    findings = lint_gguf(path)
    errors = [f for f in findings if f.severity == "error"]
    if errors:
        more = f" (and {len(errors) - 1} more: see ropetool inspect)" if len(errors) > 1 else ""
        raise RopetoolError(f"{path}: {errors[0].message}{more}")
    ref = ReferenceModel.from_gguf(path)
    weight_type = _weight_type(ref.tensor_types())
    if source is not None:
        ref = ref.with_weights_from(ReferenceModel.from_hf(source))
    rope = ref.rope
    original = ref.original_context
    notes: list[str] = []
    if text is not None:
        llm = runner.load(path, n_ctx=16, device=device, verbose=verbose)
        try:
            ids = runner.tokenize(llm, text)
        finally:
            llm.close()
        if n_tokens:
            ids = ids[:n_tokens]
        if len(ids) < 2:
            raise RopetoolError("the text gives fewer than 2 tokens")
    else:
        ids, notes = default_tokens(ref.n_vocab, original, n_tokens)
    llama = runner.llama_cpp_logits(path, ids, device=device, verbose=verbose)
    reference = ref.logits(ids)
    control_rope, control_words = control_for(rope)
    control = ref.logits(ids, rope=control_rope)

    tol = tolerance if tolerance is not None else TOLERANCES.get(weight_type, DEFAULT_TOLERANCE)
    measured = Comparison.of(reference, llama.logits)
    effect = Comparison.of(reference, control)
    if measured.rel_error > tol:
        verdict = "fail"
    elif effect.rel_error <= max(tol, 10 * measured.rel_error):
        verdict = "inconclusive"
    else:
        verdict = "pass"
    # Warnings predict keys llama.cpp ignores or misreads: the likely cause of a failure.
    lint = [f.as_dict() for f in findings if f.severity == "warning"] if verdict == "fail" else []
    if rope.method == "longrope" and original and llama.n_ctx > original >= len(ids):
        notes.append("llama.cpp uses the long factors because its allocated context exceeds the original context; "
                     "the reference picks the table by the sequence length")
    return CheckReport(
        path=str(path), architecture=ref.arch.name, weight_type=weight_type, method=rope.method,
        rope=rope.as_dict(), device=llama.device, n_tokens=len(ids), original_context=original, tolerance=tol,
        llama_vs_reference=measured, control=control_words, control_effect=effect, verdict=verdict, lint=lint,
        notes=notes,
    )
