"""Step-by-step fidelity of a lossless variant: its transformer beside eager's on eager's own trajectory, judged
against eager's own rounding error measured in the same session.

Why step by step. A final image compared with eager's can't tell "numerically faithful" from "broken": 28 denoising
steps amplify bf16-level differences into a different, equally good image (FLUX.1-dev compiled vs eager at 1024²
scored LPIPS 0.38 in pytorch/pytorch#179520). Here every step sees eager's own inputs (teacher forcing: the latents,
timestep, guidance and text conditioning eager's transformer saw at that step), so differences can't compound: what
is measured is one transformer call's error, step by step.

The floor. The same inputs go through eager's transformer with every weight and input upcast (float32 for a bf16 or
fp16 session, float64 for a float32 one): ref_t, the function eager computes, computed more exactly. Eager's own error
is floor_t = ||eager_t - ref_t|| / ||ref_t||; it adapts to the model, the resolution, the card and the kernels instead
of being a constant tuned on random weights. The upcast copy shares eager's weights and upcasts each module's own
weights only while that module runs, so no second full-precision transformer is ever held (FLUX's is 22 GiB in bf16;
a float32 copy would not fit beside it on a 48 GB card).

The rule. A lossless variant must compute the same function about as accurately as eager:
||variant_t - ref_t|| / ||ref_t|| <= K × floor_t at every step. Judging the distance to ref rather than to eager
does not penalize a variant for being more exact than eager, nor depend on how its roundings correlate with eager's:
a compiled kernel that keeps intermediates in float32 scores below 1 (the tiny model: 0.07 to 0.74), one that
reproduces eager's roundings (emulate_precision_casts) exactly 1, one that rounds as much as eager but elsewhere
about 1 (bf16-level noise on eager's output: 1.0 to 1.1). The distance to eager is reported beside it; by the
triangle inequality a pass also bounds it by (K + 1) × floor.

Why K = 2. A relative error doubles with each bit of mantissa lost, so K = 2 lets a variant lose at most one bit
against eager's own arithmetic: room for kernels that round differently (another attention kernel, another reduction
order) and for the floor being one measurement per step. A change of the function itself lands at many times the
floor where eager's own error is arithmetic alone: on the tiny model a skipped block or a wrong guidance input reached
7 to 23× at those steps (docs/fidelity.md). Where eager's own error is large, smaller bugs hide under it: eager rounds
timestep × 1000 and guidance × 1000 to bf16 before the sinusoidal embeddings (guidance 3.5 becomes 3504, timestep
914.06 becomes 916), and on the tiny random-weight model that alone moves the output as much as skipping one of its
two blocks (the same bugs reached only 1.3 to 5.4× at those steps).

Use (the bench calls these; nothing here reads options or touches pytest):
    trajectory = capture(eager_pipe, render)                       # once per session, one prompt and seed
    floor = noise_floor(trajectory, eager_pipe.transformer)        # once per session
    steps = compare(trajectory, variant_pipe.transformer, floor)   # per lossless variant
    status, details = judge(steps, floor.values)                   # PASS / FAIL, and the numbers
    text = messages.fidelity(variant_name, status, details, floor.method)   # fluxperf.messages words it
"""

from __future__ import annotations

import contextlib
import itertools
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch

from fluxperf.pipelines import shared_copy
from fluxperf.rules import FAIL, PASS

# A variant may be at most this many times farther from the reference than eager is: one bit of mantissa (docstring).
K = 2.0
# The least floor the rule uses: 64 float32 units in the last place, relative. Kernels compute in float32 whatever
# the session's dtype, and a correct one may round its float32 arithmetic differently from eager's (another
# accumulation order, vectorized exp and tanh): in a float32 session eager's own error against float64 is a few
# ULPs, and compile on CPU landed 8-10 times past it (tiny model, 1.2-1.4e-6 against eager's 1.4-1.7e-7) with
# nothing wrong. 64 ULPs (7.6e-6) leaves five times that; a bf16 session's floor (1e-3 and up) is far above it,
# and a real bug (a skipped block, a wrong guidance) moves the output by 1e-2 and more.
MIN_FLOOR = 64 * 2.0**-23

# The reference's dtype for each session dtype: one step up, enough to make eager's own error the whole difference.
REFERENCE_DTYPE = {torch.bfloat16: torch.float32, torch.float16: torch.float32, torch.float32: torch.float64}

Progress = Callable[[str], None]


# ----- capturing eager's trajectory -------------------------------------------------------------------------------


@dataclass
class Trajectory:
    """What eager's transformer saw and returned at every denoising step of one pipeline call.

    `args[t]` and `kwargs[t]` are step t's inputs (detached clones); a tensor equal at every step (the text
    conditioning, the position ids) is stored once and shared between steps. `outputs[t]` is eager's output."""

    args: list[tuple] = field(default_factory=list)
    kwargs: list[dict] = field(default_factory=list)
    outputs: list[torch.Tensor] = field(default_factory=list)

    @property
    def steps(self) -> int:
        return len(self.outputs)

    @property
    def dtype(self) -> torch.dtype:
        return self.outputs[0].dtype

    @property
    def nbytes(self) -> int:
        """Bytes held, each shared tensor counted once."""
        seen: dict[int, int] = {}
        for t in itertools.chain(self.outputs, *(_tensors(a) for a in self.args), *(_tensors(k) for k in self.kwargs)):
            seen[id(t)] = t.numel() * t.element_size()
        return sum(seen.values())


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for x in obj:
            yield from _tensors(x)
    elif isinstance(obj, dict):
        for x in obj.values():
            yield from _tensors(x)


def _snapshot(obj, previous):
    """A detached copy of a call's inputs; a tensor equal to the previous step's is that step's object, not a copy."""
    if isinstance(obj, torch.Tensor):
        if (
            isinstance(previous, torch.Tensor)
            and previous.shape == obj.shape
            and previous.dtype == obj.dtype
            and previous.device == obj.device
            and previous.stride() == obj.stride()
            and torch.equal(previous, obj)
        ):
            return previous
        # clone() keeps the strides of a dense tensor: a compiled variant called with these inputs sees the layout it
        # was compiled for, and doesn't recompile.
        return obj.detach().clone()
    if isinstance(obj, (tuple, list)):
        prev = previous if isinstance(previous, (tuple, list)) and len(previous) == len(obj) else [None] * len(obj)
        return type(obj)(_snapshot(x, p) for x, p in zip(obj, prev))
    if isinstance(obj, dict):
        prev = previous if isinstance(previous, dict) else {}
        return {k: _snapshot(v, prev.get(k)) for k, v in obj.items()}
    return obj


def output_tensor(out) -> torch.Tensor:
    """The denoiser's prediction from whatever a transformer call returns: a tuple (return_dict=False), an output
    object with `.sample`, or a tensor."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    sample = getattr(out, "sample", None)
    if isinstance(sample, torch.Tensor):
        return sample
    raise TypeError(f"can't find the prediction in a transformer output of type {type(out).__name__}")


def capture(pipe, render: Callable[[Any], Any]) -> Trajectory:
    """Run `render(pipe)` (one pipeline call, one prompt and seed) and record every call of `pipe.transformer`: one
    per denoising step for FLUX.1-dev (two with true CFG, and then "step" below means call).

    The hooks are removed afterwards; `pipe` is left as it was."""
    transformer = pipe.transformer
    if not isinstance(transformer, torch.nn.Module):
        raise TypeError(f"capture needs eager's transformer as an nn.Module, got {type(transformer).__name__}")
    traj = Trajectory()

    def before(module, args, kwargs):
        prev_args = traj.args[-1] if traj.args else None
        prev_kwargs = traj.kwargs[-1] if traj.kwargs else None
        traj.args.append(_snapshot(tuple(args), prev_args))
        traj.kwargs.append(_snapshot(dict(kwargs), prev_kwargs))

    def after(module, args, kwargs, out):
        traj.outputs.append(output_tensor(out).detach().clone())

    handles = [
        transformer.register_forward_pre_hook(before, with_kwargs=True),
        transformer.register_forward_hook(after, with_kwargs=True),
    ]
    try:
        render(pipe)
    finally:
        for h in handles:
            h.remove()
    if not traj.outputs:
        raise RuntimeError("the pipeline call never called pipe.transformer: nothing to compare step by step")
    return traj


# ----- the noise floor: eager against its own upcast computation ---------------------------------------------------


def _coarser(t: torch.Tensor, dtype: torch.dtype) -> bool:
    """A floating tensor less precise than `dtype`: upcast it; never round a more precise one down."""
    return t.is_floating_point() and torch.finfo(t.dtype).eps > torch.finfo(dtype).eps


def _upcast(obj, dtype: torch.dtype):
    if isinstance(obj, torch.Tensor):
        return obj.to(dtype) if _coarser(obj, dtype) else obj
    if isinstance(obj, (tuple, list)):
        return type(obj)(_upcast(x, dtype) for x in obj)
    if isinstance(obj, dict):
        return {k: _upcast(v, dtype) for k, v in obj.items()}
    return obj


def upcast_twin(transformer: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """A copy of `transformer`'s module structure that shares every weight with it and computes in `dtype`.

    Each module's own floating parameters and buffers are replaced by upcast copies just before that module runs
    and put back right after (forward pre/post hooks on the copy, never on eager's modules), so at most one module's
    weights exist in `dtype` at a time. The values are eager's exactly: only the precision of the arithmetic
    changes. A weight read outside its module's forward stays in the low dtype; mixed with `dtype` activations it is
    promoted, the same value, so that is no loss either (and F.linear with mixed dtypes would raise, not hide it)."""
    twin = shared_copy(transformer)
    saved: dict[int, list[tuple[dict, dict]]] = {}  # a stack per module, should a module run inside itself

    def swap_in(module, args):
        params = {n: p for n, p in module._parameters.items() if p is not None and _coarser(p, dtype)}
        buffers = {n: b for n, b in module._buffers.items() if b is not None and _coarser(b, dtype)}
        saved.setdefault(id(module), []).append((params, buffers))
        for n, p in params.items():
            module._parameters[n] = torch.nn.Parameter(p.detach().to(dtype), requires_grad=False)
        for n, b in buffers.items():
            module._buffers[n] = b.to(dtype)

    def swap_out(module, args, out):
        params, buffers = saved[id(module)].pop()
        module._parameters.update(params)
        module._buffers.update(buffers)

    for module in twin.modules():
        own = itertools.chain(module._parameters.values(), module._buffers.values())
        if any(t is not None and _coarser(t, dtype) for t in own):
            module.register_forward_pre_hook(swap_in)
            module.register_forward_hook(swap_out)
    return twin


@contextlib.contextmanager
def _exact_float32():
    """float32 matmuls in full precision while the reference runs: TF32 keeps 10 mantissa bits, only 3 more than
    bf16, and the reference must be far more exact than eager for the floor to be eager's error alone."""
    matmul = torch.get_float32_matmul_precision()
    cudnn = torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(matmul)
        torch.backends.cudnn.allow_tf32 = cudnn


def reference_outputs(
    trajectory: Trajectory,
    transformer: torch.nn.Module,
    dtype: torch.dtype | None = None,
    progress: Progress | None = None,
) -> list[torch.Tensor]:
    """Eager's transformer on each step's recorded inputs, computed in `dtype` (default: REFERENCE_DTYPE)."""
    low = trajectory.dtype
    dtype = dtype or REFERENCE_DTYPE.get(low)
    if dtype is None:
        raise ValueError(f"no higher-precision reference for a {low} session")
    twin = upcast_twin(transformer, dtype)
    outs = []
    try:
        with torch.no_grad(), _exact_float32():
            for t in range(trajectory.steps):
                if progress:
                    progress(f"reference step {t + 1}/{trajectory.steps} in {dtype}")
                args = _upcast(trajectory.args[t], dtype)
                kwargs = _upcast(trajectory.kwargs[t], dtype)
                outs.append(output_tensor(twin(*args, **kwargs)).detach().clone())
    finally:
        del twin
    return outs


def relative_error(x: torch.Tensor, ref: torch.Tensor) -> float:
    """||x - ref|| / ||ref|| (Frobenius), computed in float64."""
    x, ref = x.detach().double(), ref.detach().double()
    denom = ref.norm()
    return float((x - ref).norm() / denom) if denom > 0 else (0.0 if torch.equal(x, ref) else math.inf)


def cosine(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x.detach().double().flatten(), y.detach().double().flatten()
    return float(torch.dot(x, y) / (x.norm() * y.norm()))


@dataclass
class Floor:
    """Eager's own error per step against the upcast reference; the reference outputs are kept for compare()."""

    values: list[float]
    reference_dtype: str
    session_dtype: str
    reference: list[torch.Tensor] = field(default_factory=list, repr=False)

    @property
    def method(self) -> str:
        return (
            f"eager's own rounding error: the same inputs through eager's transformer with weights and inputs "
            f"upcast to {self.reference_dtype} (eager runs in {self.session_dtype})"
        )

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("values", "reference_dtype", "session_dtype", "method")}


def noise_floor(
    trajectory: Trajectory,
    transformer: torch.nn.Module,
    dtype: torch.dtype | None = None,
    progress: Progress | None = None,
) -> Floor:
    """floor_t = ||eager_t - ref_t|| / ||ref_t||, with ref_t from reference_outputs."""
    ref = reference_outputs(trajectory, transformer, dtype, progress)
    values = [relative_error(e, r) for e, r in zip(trajectory.outputs, ref)]
    return Floor(values, _name(ref[0].dtype), _name(trajectory.dtype), ref)


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# ----- comparing a variant -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepError:
    step: int  # denoising step, counted from 0 as diffusers' step callbacks count it
    error_vs_ref: float  # ||variant - ref|| / ||ref||: the judged number, to set beside eager's floor
    error_vs_eager: float  # ||variant - eager|| / ||eager||
    cosine_vs_eager: float

    def to_dict(self) -> dict:
        return asdict(self)


def compare(
    trajectory: Trajectory, transformer: Callable, floor: Floor, progress: Progress | None = None
) -> list[StepError]:
    """The variant's transformer on each step's recorded inputs, against the reference's output and eager's.

    Each output is reduced to numbers at once and dropped: nothing is held, and a CUDA graph's output buffer, which
    the next replay overwrites, is read before that replay."""
    if len(floor.reference) != trajectory.steps:
        raise ValueError(f"the floor holds {len(floor.reference)} reference outputs for {trajectory.steps} steps")
    steps = []
    with torch.no_grad():  # as the pipeline calls it: a compiled transformer sees the grad mode it was compiled for
        for t in range(trajectory.steps):
            if progress:
                progress(f"step {t + 1}/{trajectory.steps}")
            out = output_tensor(transformer(*trajectory.args[t], **trajectory.kwargs[t]))
            eager = trajectory.outputs[t]
            if out.shape != eager.shape:
                raise ValueError(
                    f"step {t}: the variant's transformer returned shape {tuple(out.shape)}, "
                    f"eager's {tuple(eager.shape)}"
                )
            steps.append(
                StepError(t, relative_error(out, floor.reference[t]), relative_error(out, eager), cosine(out, eager))
            )
            del out
    return steps


# ----- the rule ------------------------------------------------------------------------------------------------


def judge(steps: list[StepError], floors: list[float], k: float = K, min_floor: float = MIN_FLOOR) -> tuple[str, dict]:
    """PASS when at every step the variant's error against the reference is within k × eager's (the floor, at least
    `min_floor`); FAIL otherwise, naming the first step past the bound. A non-finite error or floor fails: NaN is
    never within."""
    if len(steps) != len(floors):
        raise ValueError(f"{len(steps)} compared steps but {len(floors)} floors")
    rows, failing = [], []
    for s, floor in zip(steps, floors):
        floor = max(floor, min_floor) if math.isfinite(floor) else floor
        bound = k * floor
        ratio = s.error_vs_ref / floor if floor > 0 else (0.0 if s.error_vs_ref == 0 else math.inf)
        within = math.isfinite(s.error_vs_ref) and math.isfinite(floor) and s.error_vs_ref <= bound
        row = {**s.to_dict(), "floor": floor, "bound": bound, "ratio": ratio, "within": within}
        rows.append(row)
        if not within:
            failing.append(row)
    finite = sorted(r["ratio"] for r in rows if math.isfinite(r["ratio"]))
    details = {
        "k": k,
        "min_floor": min_floor,
        "steps": rows,
        "n_steps": len(rows),
        "n_failing": len(failing),
        "first_failure": failing[0] if failing else None,
        "worst": max(rows, key=lambda r: r["ratio"] if not math.isnan(r["ratio"]) else math.inf),
        "ratio_min": finite[0] if finite else math.nan,
        "ratio_median": _median(finite),
        "ratio_max": finite[-1] if finite else math.nan,
    }
    return (FAIL if failing else PASS), details


def _median(xs: list[float]) -> float:
    if not xs:
        return math.nan
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2
