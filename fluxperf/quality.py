"""LPIPS, SSIM and PSNR of a variant's images against eager's, per image, with mean and worst."""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"  # what torchvision's AlexNet weights download is called
# Which direction is worse, per metric.
HIGHER_IS_BETTER = {"lpips": False, "ssim": True, "psnr_db": True}


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
    how = (f"Pre-seed the cache on a machine with internet: python -c \"import torchvision; "
           f"torchvision.models.alexnet(weights='DEFAULT')\" and copy {ALEXNET_FILE} into $TORCH_HOME/hub/checkpoints/ "
           f"(TORCH_HOME={torch_home()}); or, for an offline smoke run only, pass --fluxperf-lpips-random-backbone")
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # lpips still calls torchvision's deprecated `pretrained=` argument.
        warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
        torch.manual_seed(0)  # the random backbone must be the same one every session
        try:
            # Without the cached file torchvision downloads it; offline that download fails.
            model = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=random_backbone, verbose=False)
        except OSError as exc:  # URLError and friends
            raise LpipsUnavailable(f"LPIPS needs torchvision's AlexNet weights at {checkpoint}, which are absent and "
                                   f"could not be downloaded ({exc}). {how}") from None
    return model.eval().to(device)


def to_float(images_u8: torch.Tensor) -> torch.Tensor:
    return images_u8.float() / 255.0


def per_image(reference_u8: torch.Tensor, images_u8: torch.Tensor, lpips_model=None) -> dict[str, list]:
    """Metrics for each image pair; N×3×H×W uint8 tensors. PSNR of identical images is inf."""
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    if reference_u8.shape != images_u8.shape:
        raise ValueError(f"image shapes differ: reference {tuple(reference_u8.shape)} vs {tuple(images_u8.shape)}")
    out: dict[str, list] = {"ssim": [], "psnr_db": [], "lpips": [] if lpips_model is not None else None}
    with torch.no_grad():
        for ref, img in zip(to_float(reference_u8), to_float(images_u8)):
            ref, img = ref[None], img[None]
            out["ssim"].append(float(structural_similarity_index_measure(img, ref, data_range=1.0)))
            out["psnr_db"].append(float(peak_signal_noise_ratio(img, ref, data_range=1.0)))
            if lpips_model is not None:
                dev = next(lpips_model.parameters()).device
                # LPIPS expects [-1, 1].
                out["lpips"].append(float(lpips_model(img.to(dev) * 2 - 1, ref.to(dev) * 2 - 1).flatten()[0]))
    return out


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


def summarize(metric: str, values: list[float]) -> Summary:
    """The aggregate and the worst value: the arithmetic mean for SSIM and LPIPS, the pooled PSNR for PSNR."""
    pick = min if HIGHER_IS_BETTER[metric] else max
    worst_index = pick(range(len(values)), key=values.__getitem__)
    mean = pooled_psnr_db(values) if metric == "psnr_db" else sum(values) / len(values)
    return Summary(mean, values[worst_index], worst_index)


def score(reference_u8: torch.Tensor, images_u8: torch.Tensor, items, lpips_model=None,
          backbone: str = "alexnet") -> tuple[dict, int]:
    """Every metric per image with its aggregate and worst image; returns it and the index of the worst by SSIM."""
    values = per_image(reference_u8, images_u8, lpips_model)
    out = {}
    for metric, vals in values.items():
        if vals is None:
            continue
        s = summarize(metric, vals)
        out[metric] = {"values": vals, "mean": s.mean, "worst": s.worst, "worst_item": list(items[s.worst_index])}
    if "lpips" in out:
        out["lpips"]["backbone"] = backbone
    return out, summarize("ssim", values["ssim"]).worst_index


def fmt(metric: str, value: float | None) -> str:
    """Human form; inf PSNR prints as 'identical', never as a number."""
    if value is None:
        return "–"
    if metric == "psnr_db":
        return "identical" if math.isinf(value) else f"{value:.2f} dB"
    return f"{value:.4f}"


def json_value(value: float | None) -> float | None:
    """JSON has no inf: identical images store PSNR as null (the report says 'identical')."""
    return None if value is None or not math.isfinite(value) else value


class Scorer:
    """Scores a variant's images against eager's; holds the LPIPS network, made on first use."""

    def __init__(self, random_backbone: bool, device: str):
        self.random_backbone, self.device = random_backbone, device
        self._lpips = None

    def score(self, reference_u8: torch.Tensor, images_u8: torch.Tensor, items) -> tuple[dict, int, str | None]:
        """(metrics, index of the worst image by SSIM, why LPIPS is missing or None)."""
        error = None
        try:
            if self._lpips is None:
                self._lpips = make_lpips(self.random_backbone, self.device)
        except LpipsUnavailable as exc:
            error = str(exc)
        metrics, worst = score(reference_u8, images_u8, items, self._lpips,
                               "random" if self.random_backbone else "alexnet")
        return metrics, worst, error


def determinism(reference_u8: torch.Tensor, timed: dict, items, bound_psnr_db: float) -> dict:
    """Eager's timed images against its reference images of the same prompt and seed."""
    worst = math.inf
    for item, img in timed.items():
        worst = min(worst, per_image(reference_u8[items.index(item)][None], img)["psnr_db"][0])
    return {"identical": math.isinf(worst), "worst_psnr_db": json_value(worst), "bound_psnr_db": bound_psnr_db,
            "images_compared": len(timed), "ok": worst >= bound_psnr_db}
