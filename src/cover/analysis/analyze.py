"""``cover analyze`` and :func:`cover.analyze`: how a backbone's pixel features are arranged.

On labeled images, the finest decoder features of a pretrained (or untrained) backbone are
measured with :mod:`cover.analysis.dispersion` (intra-/inter-class cosine distances and their
ratio, neighbour similarity by distance for same- and different-class pairs) and pictured
with :mod:`cover.analysis.feature_figures`. Outputs in ``out``:

* ``analysis.json``: every number: ``intra`` and ``inter`` (mean cosine distances),
  ``intra_over_inter``, ``per_class_intra``, ``per_pair_inter``, ``random_same_class_similarity``
  (= 1 - intra), ``neighbour_similarity`` (``distance`` and the mean cosine similarity of
  ``all``/``same``/``different``-class pixel pairs at each distance),
  ``same_class_neighbour_similarity_1px``, ``same_class_neighbour_distance_over_inter``
  (``(1 - same-class similarity) / inter`` per distance: how far apart same-class neighbours are
  relative to the classes' separation, unaffected by an overall shrinking or spreading of the
  features), ``pair_cos`` and ``eff_rank`` (:mod:`cover.methods.collapse` on 2048 random pixel
  pairs of the images) with ``collapsed``, for a checkpoint ``untrained`` (the same numbers for
  an untrained backbone of the same architecture: the scratch reference), the classes, the
  method and checkpoint, and the data source;
* ``features_pca.png``: image, labels and the features' first three principal components as
  RGB for a few images (3D: the middle slice along array axis 0);
* ``embedding.png``: a 2D embedding (PCA or t-SNE) of the sampled pixel features by class;
* ``neighbour_similarity.png``: similarity versus pixel distance;
* ``config.yaml``: the arguments.

Without images, the built-in default is the 10 axial slices of the MNI152 template's test
slab (:data:`cover.data.demo.TEST_SLAB`, never used for pretraining) with their 4-class tissue
labels, cut exactly like the downstream demo (:func:`cover.data.demo.demo_slices`).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from cover.analysis.dispersion import ClassSamples, NeighbourStats, class_distances, normalise_features
from cover.config import DEFAULT_CHANNELS, intensity_argument, save_yaml
from cover.data.demo import DEMO_SIZE, TEST_SLAB, TISSUE_NAMES, demo_slices
from cover.downstream.outputs import prepare_output
from cover.engine.distributed import resolve_device
from cover.errors import ConfigError
from cover.methods.collapse import COLLAPSE_COSINE, is_collapsed, pixel_stats, sample_pixels
from cover.runtime import progress_bar

log = logging.getLogger(__name__)

#: Random pixel pairs of the collapse statistic (drawn over all analysed images).
COLLAPSE_PAIRS = 2048

EMBEDDINGS = ("pca", "tsne")
#: What the built-in images are (:func:`demo_labeled_images`), as ``analysis.json`` says.
DEMO_SOURCE = "MNI152 test-slab axial slices z 100-109 (never used for pretraining), 96 px, 4 tissue classes"


@dataclass
class LabeledImage:
    """One image with its label map.

    Attributes:
        name: Case name.
        image: ``(C, *S)`` float32 normalised image.
        label: ``(*S)`` int64 labels.
    """

    name: str
    image: torch.Tensor
    label: torch.Tensor


def demo_labeled_images(size: int = DEMO_SIZE) -> list[LabeledImage]:
    """The built-in default: MNI152 test-slab axial slices with 4-class tissue labels.

    Args:
        size: Slice side in pixels (96 = the demo pretraining's pixel scale).

    Returns:
        10 images (z = 100 … 109), values in [0, 1].
    """
    z_values = range(*TEST_SLAB)
    images, labels = demo_slices(z_values, size)
    return [
        LabeledImage(f"mni_z{z:03d}", torch.from_numpy(img.astype(np.float32) / 255.0)[None], torch.from_numpy(lab))
        for z, img, lab in zip(z_values, images, labels, strict=True)
    ]


def load_labeled_images(
    images: str | None,
    labels: str | None,
    datalist: str | None,
    *,
    dim: int,
    preset: str | None,
    in_channels: int,
    max_images: int,
) -> list[LabeledImage]:
    """Read labeled images through the data layer (same pairing rules as ``cover finetune``).

    Args:
        images: Image folder or file.
        labels: Label-map folder matching ``images`` by file-name stem.
        datalist: JSON/CSV datalist with ``image`` and ``label`` (instead of the folders).
        dim: Spatial dimensions of the backbone.
        preset: Intensity preset (``None``/``auto``: each file's default).
        in_channels: Image channels.
        max_images: Read at most this many cases (the first ones, sorted by name).

    Returns:
        The images with their labels.
    """
    from cover.downstream.cases import find_cases
    from cover.downstream.loading import load_case

    cases, _ = find_cases("seg", images, labels, datalist)
    cases = sorted(cases, key=lambda c: c.name)[:max_images]
    loaded = []
    for case in progress_bar(cases, desc="reading", leave=False, disable=len(cases) < 20):
        item = load_case(case, task="seg", dim=dim, preset=preset, in_channels=in_channels, size=())
        loaded.append(LabeledImage(case.name, item.image, item.label))
    return loaded


def load_backbone(
    checkpoint: str | Path | None, model: dict[str, Any] | None = None, seed: int = 0
) -> tuple[nn.Module, dict[str, Any]]:
    """The backbone to analyse.

    Args:
        checkpoint: A ``cover pretrain`` checkpoint (file, run folder), a fine-tuned checkpoint
            or an export folder; ``None`` gives an untrained backbone (the scratch reference).
        model: For ``checkpoint=None``: ``backbone``, ``channels``, ``spatial_dims``,
            ``in_channels`` (defaults: the paper's 2D U-Net, 1 channel).
        seed: Seed of the untrained backbone's initialisation.

    Returns:
        ``(backbone in eval mode, info)``; ``info`` holds ``method``, ``checkpoint``,
        ``spatial_dims``, ``in_channels``, ``preset`` (``None`` if unknown) and ``metadata`` (what
        :func:`cover.models.loading.build_from_metadata` rebuilds the architecture from).
    """
    from cover.models.loading import build_from_metadata

    if checkpoint is None:
        spec = {"backbone": "unet", "channels": DEFAULT_CHANNELS, "spatial_dims": 2, "in_channels": 1}
        unknown = sorted(set(model or {}) - set(spec))
        if unknown:
            raise ConfigError(f"model: unknown keys {unknown} (allowed: {', '.join(spec)})")
        spec.update(model or {})
        spec["backbone_args"] = {"channels": spec.pop("channels")}
        torch.manual_seed(seed)
        backbone = build_from_metadata(spec)
        info = {"method": "scratch", "checkpoint": None, "preset": None, "metadata": spec}
    else:
        from cover.models.loading import load_backbone as load_checkpoint_backbone
        from cover.models.loading import pretrained_preset

        backbone, loaded = load_checkpoint_backbone(checkpoint, whole=True)  # the finest decoder features
        method = loaded.metadata.get("method", "unknown")
        info = {
            "method": method,
            "checkpoint": str(loaded.source),
            "preset": pretrained_preset(loaded.metadata),
            "metadata": loaded.metadata,
        }
    info.update(spatial_dims=int(backbone.spatial_dims), in_channels=int(backbone.in_channels))
    return backbone.eval(), info


@torch.no_grad()
def pixel_features(backbone: nn.Module, image: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """Finest decoder features of one image (zero-padded to the backbone's divisor, then cropped).

    Args:
        backbone: Pyramid-returning backbone.
        image: ``(C, *S)``.
        device: Where to run.

    Returns:
        ``(C_L, *S)`` float32 features on the CPU.
    """
    spatial = tuple(image.shape[1:])
    divisor = int(getattr(backbone, "divisor", 1))
    pad = []
    for size in reversed(spatial):
        pad += [0, (-size) % divisor]
    batch = F.pad(image[None].float(), pad).to(device)
    features = backbone(batch)[-1][0]
    crop = (slice(None),) + tuple(slice(0, s) for s in spatial)
    return features[crop].float().cpu()


def _middle_slice(array: np.ndarray, spatial_dims: int) -> np.ndarray:
    """``(..., *S)`` -> ``(..., H, W)``: itself in 2D, the middle slice of the first spatial axis in 3D."""
    if spatial_dims == 2:
        return array
    axis = array.ndim - 3
    return np.take(array, array.shape[axis] // 2, axis=axis)


def feature_geometry(
    backbone: nn.Module,
    data: list[LabeledImage],
    *,
    samples_per_class: int = 500,
    max_distance: int = 8,
    include_background: bool = False,
    seed: int = 0,
    device: torch.device | str = "cpu",
    keep: int = 0,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Measure the geometry of a backbone's finest pixel features on labeled images.

    Args:
        backbone: Pyramid-returning backbone (eval mode).
        data: Labeled images.
        samples_per_class: Pixels sampled per class for the class distances.
        max_distance: Largest neighbour distance in pixels.
        include_background: Also analyse label 0.
        seed: Seed of the pixel sampling.
        device: Where the backbone runs.
        keep: Keep the features of this many images for figures.

    Returns:
        ``(results, extras)``: the numbers (see :func:`analyze`), and ``samples`` (class ->
        sampled unit features) plus ``kept`` (``(image, label, features)`` of the first
        ``keep`` images, 2D slices) for the figures.
    """
    if not data:
        raise ConfigError("images: no labeled images to analyse")
    present = sorted({int(v) for item in data for v in torch.unique(item.label).tolist()})
    classes = [c for c in present if include_background or c != 0]
    if not classes:
        raise ConfigError("labels: no foreground labels found (every pixel is 0); use --include-background")
    neighbours = NeighbourStats(max_distance)
    samples = ClassSamples(samples_per_class, max(1, math.ceil(2 * samples_per_class / len(data))), seed)
    kept, drawn = [], []
    draws = torch.Generator().manual_seed(seed)
    per_image = max(1, math.ceil(2 * COLLAPSE_PAIRS / len(data)))
    dims = int(backbone.spatial_dims)
    for index, item in enumerate(progress_bar(data, desc="features", leave=False, disable=len(data) < 5)):
        features = pixel_features(backbone, item.image, device)
        drawn.append(sample_pixels(features[None], per_image, draws))
        unit = normalise_features(features)
        analysed = torch.isin(item.label, torch.tensor(classes))
        neighbours.add(unit, item.label, analysed)
        samples.add(unit, item.label, classes)
        if index < keep:
            kept.append(
                (
                    _middle_slice(item.image[0].numpy(), dims),
                    _middle_slice(item.label.numpy(), dims),
                    _middle_slice(unit.numpy(), dims),
                )
            )
    sampled = samples.sampled()
    distances = class_distances(sampled)
    pixels = torch.cat(drawn)
    collapse = pixel_stats(pixels[torch.randperm(len(pixels), generator=draws)])
    curves = neighbours.means()
    results = {
        "classes": classes,
        "num_images": len(data),
        "samples_per_class": {str(c): int(v.shape[0]) for c, v in sampled.items()},
        **distances,
        "random_same_class_similarity": 1.0 - distances["intra"],
        "neighbour_similarity": {"distance": list(range(1, max_distance + 1)), **curves},
        "same_class_neighbour_similarity_1px": curves["same"][0],
        "different_class_neighbour_similarity_1px": curves["different"][0],
    }
    # Scale-free view: a collapsed feature space has near-1 similarities everywhere, so compare the
    # cosine distance of same-class neighbours with the typical distance between classes.
    inter = distances["inter"]
    relative = [None if v is None or not inter > 0 else (1.0 - v) / inter for v in curves["same"]]
    results["same_class_neighbour_distance_over_inter"] = relative
    results["same_class_neighbour_distance_over_inter_1px"] = relative[0]
    results["pair_cos"] = collapse["pair_cos"]
    results["eff_rank"] = collapse["eff_rank"]
    results["collapsed"] = is_collapsed(collapse)
    return results, {"samples": sampled, "kept": kept}


def write_figures(
    results: dict[str, Any],
    extras: dict[str, Any],
    names: dict[int, str],
    out: Path,
    embedding: str,
    seed: int,
    title: str,
) -> None:
    """Write ``features_pca.png``, ``embedding.png`` and ``neighbour_similarity.png``.

    Args:
        results: Numbers from :func:`feature_geometry`.
        extras: Samples and kept images from :func:`feature_geometry`.
        names: Class -> name.
        out: Output folder.
        embedding: ``pca`` or ``tsne``.
        seed: Random state.
        title: Title of the PCA figure.
    """
    from cover.analysis.feature_figures import (
        fit_pca,
        pca_rgb,
        plot_embedding,
        plot_feature_pca,
        plot_neighbour_similarity,
    )

    samples = extras["samples"]
    if extras["kept"]:
        stacked = np.concatenate([v for v in samples.values()])
        pca = fit_pca(stacked, 3, seed)
        kept = extras["kept"]
        rgbs = [pca_rgb(features, pca) for _, _, features in kept]
        plot_feature_pca([k[0] for k in kept], [k[1] for k in kept], rgbs, out / "features_pca.png", title)
    plot_embedding(samples, names, out / "embedding.png", embedding, seed)
    curves = {title: results["neighbour_similarity"]}
    plot_neighbour_similarity(
        curves, out / "neighbour_similarity.png", {title: results["random_same_class_similarity"]}
    )


def analyze(
    checkpoint: str | Path | None = None,
    images: str | None = None,
    labels: str | None = None,
    datalist: str | None = None,
    out: str | Path = "cover_runs/analyze",
    *,
    intensity: str | None = None,
    preset: str | None = None,
    class_names: list[str] | None = None,
    samples_per_class: int = 500,
    max_distance: int = 8,
    include_background: bool = False,
    embedding: str = "pca",
    max_images: int = 32,
    figure_images: int = 3,
    seed: int = 0,
    device: str = "auto",
    overwrite: bool = False,
    model: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Measure feature over-dispersion of a backbone on labeled images.

    Args:
        checkpoint: A ``cover pretrain`` checkpoint (file or run folder), a fine-tuned
            checkpoint or an export folder; ``None`` analyses an untrained backbone (``model``).
        images: Image folder or file; with ``labels`` (label maps matched by file-name stem).
            ``None`` (and no ``datalist``) uses the MNI152 test-slab slices.
        labels: Label-map folder.
        datalist: JSON/CSV datalist with ``image`` and ``label`` (instead of the folders).
        out: Output folder (never silently overwritten).
        intensity: Intensity preset of the images (default: the checkpoint's, else per file).
        preset: Old name of ``intensity`` (deprecated).
        class_names: Names of labels 0, 1, ... for the figures.
        samples_per_class: Pixels sampled per class for the class distances.
        max_distance: Largest neighbour distance in pixels.
        include_background: Also analyse label 0 (left out by default: it is usually
            everything that is not a structure of interest).
        embedding: ``pca`` or ``tsne`` for ``embedding.png``.
        max_images: Analyse at most this many images.
        figure_images: Images shown in ``features_pca.png``.
        seed: Seed of the pixel sampling (and of the untrained backbone).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        overwrite: Allow writing into a non-empty ``out``.
        model: Backbone of ``checkpoint=None`` (``backbone``, ``channels``, ``spatial_dims``,
            ``in_channels``).

    Returns:
        The content of ``analysis.json`` (its keys: :mod:`cover.analysis.analyze`). The printed
        line gives the scale-free measure, the untrained reference and "collapsed" / "not collapsed".

    Examples:
        The demo backbone of :func:`cover.pretrain`'s example on 4 labeled MNI152 test slices:

        >>> import cover
        >>> report = cover.analyze("runs/demo", out="runs/analysis", max_images=4)
        >>> report["num_images"], report["method"]
        (4, 'cover')
    """
    call = dict(locals())  # the arguments as given (nothing else is bound yet), for config.yaml
    intensity = intensity_argument(intensity, preset)
    _check_options(embedding, samples_per_class, max_distance)
    torch_device = resolve_device(device)
    backbone, info = load_backbone(checkpoint, model, seed)
    backbone.to(torch_device)
    folder = prepare_output(out, overwrite, "analyze")
    save_yaml(_recorded_arguments({**call, "intensity": intensity}), folder / "config.yaml")
    data, source, names = _labeled_data(images, labels, datalist, info, intensity, max_images, class_names)
    sampling = {"samples_per_class": samples_per_class, "include_background": include_background, "seed": seed}
    results, extras = feature_geometry(
        backbone, data, max_distance=max_distance, device=torch_device, keep=figure_images, **sampling
    )
    if checkpoint is not None:
        results["untrained"] = untrained_reference(info["metadata"], data, seed, torch_device, samples_per_class)
    names = {c: names.get(c, str(c)) for c in results["classes"]}
    title = f"{info['method']}" + (f" ({Path(info['checkpoint']).name})" if info["checkpoint"] else " (untrained)")
    write_figures(results, extras, names, folder, embedding, seed, title)
    return _write_summary(folder, info, source, results, names)


#: The arguments of :func:`analyze` that ``config.yaml`` records, in this order.
_RECORDED = (
    "checkpoint", "images", "labels", "datalist", "out", "intensity", "samples_per_class", "max_distance",
    "include_background", "embedding", "max_images", "seed", "device", "model",
)  # fmt: skip


def _recorded_arguments(call: dict[str, Any]) -> dict[str, Any]:
    """What ``config.yaml`` holds: :data:`_RECORDED` of ``call``, paths as strings."""
    recorded = {key: call[key] for key in _RECORDED}
    recorded["checkpoint"] = None if call["checkpoint"] is None else str(call["checkpoint"])
    recorded["out"] = str(call["out"])
    return recorded


def _check_options(embedding: str, samples_per_class: int, max_distance: int) -> None:
    """Refuse an unknown embedding and too small sample counts or distances."""
    if embedding not in EMBEDDINGS:
        raise ConfigError(f"embedding: {embedding!r} is not allowed (allowed: {', '.join(EMBEDDINGS)})")
    for key, value, low in (("samples_per_class", samples_per_class, 2), ("max_distance", max_distance, 1)):
        if value < low:
            raise ConfigError(f"{key}: {value} must be at least {low}")


def _labeled_data(
    images: str | None,
    labels: str | None,
    datalist: str | None,
    info: dict[str, Any],
    intensity: str | None,
    max_images: int,
    class_names: list[str] | None,
) -> tuple[list[LabeledImage], str, dict[int, str]]:
    """The images to analyse: the user's (read for the backbone ``info``) or the built-in slices.

    Returns:
        ``(images, source, names)``: the labeled images, where they come from in words, and
        class -> name as far as known.
    """
    if images is None and datalist is None:
        if info["spatial_dims"] != 2 or info["in_channels"] != 1:
            raise ConfigError("images: the built-in MNI152 slices are 2D, 1 channel; give --images and --labels")
        names = dict(enumerate(class_names or TISSUE_NAMES))
        return demo_labeled_images()[:max_images], DEMO_SOURCE, names
    data = load_labeled_images(
        images,
        labels,
        datalist,
        dim=info["spatial_dims"],
        preset=intensity or info["preset"],
        in_channels=info["in_channels"],
        max_images=max_images,
    )
    return data, str(datalist or images), dict(enumerate(class_names or []))


def _write_summary(
    folder: Path, info: dict[str, Any], source: str, results: dict[str, Any], names: dict[int, str]
) -> dict[str, Any]:
    """Write ``analysis.json`` (the method, checkpoint, data source, numbers and class names) and log its line."""
    from cover.runtime import json_safe

    summary = {"method": info["method"], "checkpoint": info["checkpoint"], "source": source, **results}
    summary["class_names"] = {str(c): n for c, n in names.items()}
    summary = json_safe(summary)
    (folder / "analysis.json").write_text(json.dumps(summary, indent=2))
    log.info("%s; results in %s", report_line(summary), folder)
    return summary


def untrained_reference(
    metadata: dict[str, Any], data: list[LabeledImage], seed: int, device: torch.device, samples_per_class: int
) -> dict[str, Any]:
    """The same numbers for an untrained backbone of the same architecture (the scratch reference).

    Args:
        metadata: Architecture description (:func:`cover.models.loading.build_from_metadata`).
        data: The analysed images.
        seed: Seed of the initialisation and of the pixel sampling.
        device: Where the backbone runs.
        samples_per_class: Pixels sampled per class.

    Returns:
        ``inter``, ``same_class_neighbour_distance_over_inter_1px``, ``pair_cos``,
        ``eff_rank`` and ``collapsed`` of the untrained backbone.
    """
    from cover.models.loading import build_from_metadata

    torch.manual_seed(seed)
    backbone = build_from_metadata(metadata).to(device).eval()
    results, _ = feature_geometry(
        backbone, data, samples_per_class=samples_per_class, max_distance=1, seed=seed, device=device
    )
    keys = ("inter", "same_class_neighbour_distance_over_inter_1px", "pair_cos", "eff_rank", "collapsed")
    return {key: results[key] for key in keys}


def report_line(summary: dict[str, Any]) -> str:
    """One line: class distances, the scale-free over-dispersion measure and the collapse verdict.

    Args:
        summary: The content of ``analysis.json``.

    Returns:
        The line (without the output folder).
    """
    verdict = "collapsed" if summary["collapsed"] else "not collapsed"
    relative = summary["same_class_neighbour_distance_over_inter_1px"]
    parts = [
        f"intra-class distance {summary['intra']:.4f}, inter-class {summary['inter']:.4f} "
        f"(ratio {summary['intra_over_inter']:.3f})",
        f"same-class 1 px neighbour distance / inter-class distance "
        f"{'n/a' if relative is None else format(relative, '.3f')} (scale-free; lower = neighbours closer)",
    ]
    reference = summary.get("untrained")
    if reference:
        ref_relative = reference["same_class_neighbour_distance_over_inter_1px"]
        parts.append(
            f"untrained: inter-class {reference['inter']:.4f}, neighbour / inter "
            f"{'n/a' if ref_relative is None else format(ref_relative, '.3f')}"
        )
    parts.append(
        f"features {verdict} (random pixel pairs' mean cosine {summary['pair_cos']:.3f}, limit {COLLAPSE_COSINE}; "
        f"effective rank {summary['eff_rank']:.2f})"
    )
    return "; ".join(parts)
