"""The image quality metrics computed: each metric of fluxperf.metrics per image against eager's, its aggregate and
its worst image."""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from fluxperf.metrics import METRICS
from fluxperf.result import Score, json_number

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"  # what torchvision's AlexNet weights download is called


class LpipsUnavailable(RuntimeError):
    pass


def torch_home() -> Path:
    return Path(os.environ.get("TORCH_HOME", Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "torch")).expanduser()


def make_lpips(random_backbone: bool, device: str = "cpu"):
    """LPIPS with the AlexNet backbone, as the reference comparison used.

    The backbone's weights come from torchvision's cache; offline, a missing file means LPIPS can't run
    and the error says how to pre-seed it. `random_backbone` is the explicit opt-in for offline smoke runs:
    a seeded random AlexNet, whose numbers only make sense relative to each other.
    """
    import lpips

    checkpoint = torch_home() / "hub" / "checkpoints" / ALEXNET_FILE
    how = (
        f'Pre-seed the cache on a machine with internet: python -c "import torchvision; '
        f"torchvision.models.alexnet(weights='DEFAULT')\" and copy {ALEXNET_FILE} into $TORCH_HOME/hub/checkpoints/ "
        f"(TORCH_HOME={torch_home()}); or, for an offline smoke run only, pass --fluxperf-lpips-random-backbone"
    )
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # lpips still calls torchvision's deprecated `pretrained=` argument.
        warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
        torch.manual_seed(0)  # the random backbone must be the same one every session
        try:
            # Without the cached file torchvision downloads it; offline that download fails.
            model = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=random_backbone, verbose=False)
        except OSError as exc:  # URLError and friends
            raise LpipsUnavailable(
                f"LPIPS needs torchvision's AlexNet weights at {checkpoint}, which are absent and "
                f"could not be downloaded ({exc}). {how}"
            ) from None
    return model.eval().to(device)


def to_float(images_u8: torch.Tensor) -> torch.Tensor:
    return images_u8.float() / 255.0


def _ssim(img: torch.Tensor, ref: torch.Tensor, model=None) -> float:
    from torchmetrics.functional.image import structural_similarity_index_measure

    return float(structural_similarity_index_measure(img, ref, data_range=1.0))


def _psnr_db(img: torch.Tensor, ref: torch.Tensor, model=None) -> float:
    from torchmetrics.functional.image import peak_signal_noise_ratio

    return float(peak_signal_noise_ratio(img, ref, data_range=1.0))


def _lpips(img: torch.Tensor, ref: torch.Tensor, model) -> float:
    dev = next(model.parameters()).device
    # LPIPS expects [-1, 1].
    return float(model(img.to(dev) * 2 - 1, ref.to(dev) * 2 - 1).flatten()[0])


# Each metric's computation for one image pair, float images in [0, 1] of shape 1×3×H×W (fluxperf.metrics defines
# the metrics themselves). A metric in NEEDS_MODEL is skipped without its network (LPIPS without its weights).
SCORERS = {"ssim": _ssim, "psnr_db": _psnr_db, "lpips": _lpips}
NEEDS_MODEL = {"lpips"}


def per_image(reference_u8: torch.Tensor, images_u8: torch.Tensor, lpips_model=None) -> dict[str, list | None]:
    """Every metric for each image pair; N×3×H×W uint8 tensors. PSNR of identical images is inf."""
    if reference_u8.shape != images_u8.shape:
        raise ValueError(f"image shapes differ: reference {tuple(reference_u8.shape)} vs {tuple(images_u8.shape)}")
    out = {m: None if m in NEEDS_MODEL and lpips_model is None else [] for m in METRICS}
    with torch.no_grad():
        for ref, img in zip(to_float(reference_u8), to_float(images_u8)):
            for metric, values in out.items():
                if values is not None:
                    values.append(SCORERS[metric](img[None], ref[None], lpips_model))
    return out


def psnr_db(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR of two float images (or batches) in [0, 1], all pixels pooled."""
    return _psnr_db(a.float(), b.float())


@dataclass(frozen=True)
class Summary:
    mean: float
    worst: float
    worst_index: int


def pooled_psnr_db(values: list[float]) -> float:
    """PSNR of the mean squared error over all images: 10·log10(1 / mean MSE), the data range being 1.

    Identical images add an error of 0 instead of being left out, so a variant whose images get closer to
    eager's never scores lower. inf only when every image is identical.
    """
    mse = [10 ** (-v / 10) if math.isfinite(v) else 0.0 for v in values]
    mean = sum(mse) / len(mse)
    return math.inf if mean == 0 else -10 * math.log10(mean)


AGGREGATES = {"mean": lambda values: sum(values) / len(values), "pooled": pooled_psnr_db}


def summarize(metric: str, values: list[float]) -> Summary:
    """The aggregate (metrics.Metric.aggregate: a mean, or PSNR pooled) and the worst value."""
    pick = min if METRICS[metric].higher_is_better else max
    worst_index = pick(range(len(values)), key=values.__getitem__)
    return Summary(AGGREGATES[METRICS[metric].aggregate](values), values[worst_index], worst_index)


def score(
    reference_u8: torch.Tensor, images_u8: torch.Tensor, items, lpips_model=None, backbone: str = "alexnet"
) -> dict[str, Score]:
    """Every metric per image with its aggregate and its worst image (prompt index and seed)."""
    out = {}
    for metric, values in per_image(reference_u8, images_u8, lpips_model).items():
        if values is not None:
            s = summarize(metric, values)
            out[metric] = Score(
                values, s.mean, s.worst, list(items[s.worst_index]), backbone if metric in NEEDS_MODEL else None
            )
    return out


class Scorer:
    """Scores a variant's images against eager's; holds the LPIPS network, made on first use."""

    def __init__(self, random_backbone: bool, device: str):
        self.random_backbone, self.device = random_backbone, device
        self._lpips = None

    def score(self, reference_u8: torch.Tensor, images_u8: torch.Tensor, items) -> tuple[dict, dict]:
        """(a Score per metric, why a metric is missing: {"lpips": the reason} when LPIPS can't run)."""
        errors = {}
        try:
            if self._lpips is None:
                self._lpips = make_lpips(self.random_backbone, self.device)
        except LpipsUnavailable as exc:
            errors["lpips"] = str(exc)
        scores = score(reference_u8, images_u8, items, self._lpips, "random" if self.random_backbone else "alexnet")
        return scores, errors


def determinism(reference_u8: torch.Tensor, timed: dict, items, bound_psnr_db: float) -> dict:
    """Eager's timed images against its reference images of the same prompt and seed."""
    worst = math.inf
    for item, img in timed.items():
        worst = min(worst, per_image(reference_u8[items.index(item)][None], img)["psnr_db"][0])
    return {
        "identical": math.isinf(worst),
        "worst_psnr_db": json_number(worst),
        "bound_psnr_db": bound_psnr_db,
        "images_compared": len(timed),
        "ok": worst >= bound_psnr_db,
    }
