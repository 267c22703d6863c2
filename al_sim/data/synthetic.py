"""Synthetic screening images: textured tissue with an optional lesion whose shape is the class.

Three classes (``normal``, ``benign``, ``malignant``) or two (``benign``,
``malignant``). Benign lesions are round with smooth borders, malignant ones
irregular and spiculated. ``difficulty`` widens the range of irregularity both
lesion types share and lowers the contrast of the faintest lesions (and puts
faint blobs in some normal images), so a share of images is genuinely
ambiguous, as in real screening. Everything is vectorised over images and
deterministic by seed.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from al_sim.config.data import SyntheticDatasetConf
from al_sim.data.base import ALDataset
from al_sim.maths.sampling import flip_labels

_CHUNK = 2048  # images rendered at once up to 64 px ...
_CHUNK_PIXELS = 1 << 21  # ... and above, as many as hold this many pixels (8 MB per float32
# temporary): bounded memory, and temporaries small enough to be reused rather than re-mapped
_EXACT_MAX_SIZE = 64  # images up to this size are rendered exactly as al_sim always has
_HARMONICS = (2, 3, 4, 5)
_RADIUS = (0.18, 0.28)  # lesion radius range, relative to the image size
_NOISE_SIGMA = 0.03
_WOBBLE = 0.6  # border wobble of the most irregular lesion, relative to its radius
_SHARED_BASE, _SHARED_SLOPE = 0.2, 0.5  # width of each lesion type's irregularity range
_CONTRAST_MAX = 0.45
_TISSUE_STD = 0.07


def _texture(rng: np.random.Generator, n: int, size: int, beta: float) -> np.ndarray:
    """Tissue-like 1/f^beta noise, zero mean and unit std per image.

    Up to ``_EXACT_MAX_SIZE`` px: white noise filtered in double precision (the
    original recipe, so those images never change). Above: the white noise's
    spectrum is drawn directly (complex Gaussian, one inverse FFT instead of
    two) and filtered in single precision, several times faster at 224 px.
    """
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    radial = np.sqrt(fx**2 + fy**2) + 1.0 / size
    if size <= _EXACT_MAX_SIZE:
        white = rng.standard_normal((n, size, size), dtype=np.float32)
        spectrum: np.ndarray = np.fft.rfft2(white) / radial**beta
    else:
        parts = rng.standard_normal((n, size, fx.shape[1], 2), dtype=np.float32)
        spectrum = parts.view(np.complex64)[..., 0]
        spectrum *= (radial**-beta).astype(np.float32)
    tex = np.fft.irfft2(spectrum, s=(size, size)).astype(np.float32, copy=False)
    tex -= tex.mean(axis=(1, 2), keepdims=True)
    tex /= tex.std(axis=(1, 2), keepdims=True) + 1e-6
    return tex


def _lesion_masks(
    rng: np.random.Generator, n: int, size: int, irregularity: np.ndarray
) -> np.ndarray:
    """Soft masks of lesions whose border wobbles in proportion to ``irregularity``."""
    radius = rng.uniform(*_RADIUS, n).astype(np.float32) * size
    centre = size / 2 + rng.uniform(-0.12, 0.12, (n, 2)).astype(np.float32) * size
    grid = np.arange(size, dtype=np.float32)
    dy = grid[None, :, None] - centre[:, 0, None, None]
    dx = grid[None, None, :] - centre[:, 1, None, None]
    rho = np.sqrt(dx**2 + dy**2)
    theta = np.arctan2(dy, dx)
    wobble = np.zeros_like(rho)
    amps = rng.uniform(0.5, 1.0, (n, len(_HARMONICS))).astype(np.float32)
    amps /= amps.sum(axis=1, keepdims=True)
    phases = rng.uniform(0, 2 * np.pi, (n, len(_HARMONICS))).astype(np.float32)
    for j, k in enumerate(_HARMONICS):
        wobble += amps[:, j, None, None] * np.cos(k * theta + phases[:, j, None, None])
    border = radius[:, None, None] * (1.0 + _WOBBLE * irregularity[:, None, None] * wobble)
    edge = 0.4 + 1.2 * (1.0 - irregularity[:, None, None])  # smooth benign, sharp malignant
    with np.errstate(over="ignore"):  # far outside a lesion: exp overflows to inf, mask 0
        return 1.0 / (1.0 + np.exp(-(border - rho) / edge))


def _render(
    rng: np.random.Generator, labels: np.ndarray, size: int, difficulty: float, has_normal: bool
) -> np.ndarray:
    """Images (uint8, N x size x size) for the given class labels."""
    n = len(labels)
    lesion_class = labels - 1 if has_normal else labels  # 0 benign, 1 malignant, -1 normal
    shared = _SHARED_BASE + _SHARED_SLOPE * difficulty
    irregularity = np.where(
        lesion_class == 1, rng.uniform(1 - shared, 1, n), rng.uniform(0, shared, n)
    ).astype(np.float32)
    faintest = 0.30 - 0.22 * difficulty
    contrast = rng.uniform(faintest, _CONTRAST_MAX, n).astype(np.float32)
    if has_normal:
        normal = lesion_class < 0
        # Normal images: most clean, some with a faint round blob (a benign look-alike).
        blob = normal & (rng.random(n) < 0.6 * difficulty)
        contrast = np.where(normal, np.where(blob, rng.uniform(0.02, faintest, n), 0.0), contrast)
        irregularity = np.where(normal, rng.uniform(0, 0.3, n), irregularity).astype(np.float32)
    tissue = 0.38 + _TISSUE_STD * _texture(rng, n, size, beta=1.4)
    inner = 1.0 + 0.25 * _texture(rng, n, size, beta=0.8)
    masks = _lesion_masks(rng, n, size, irregularity)
    lum = np.linspace(-0.05, 0.05, size, dtype=np.float32)
    tilt = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
    shading = tilt[:, 0, None, None] * lum[None, :, None] + tilt[:, 1, None, None] * lum[None, None]
    img = tissue + shading + contrast[:, None, None] * masks * inner
    img += _NOISE_SIGMA * rng.standard_normal(img.shape, dtype=np.float32)
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def chunk_size(image_size: int) -> int:
    """Images rendered per step (the rng draws per step, so this fixes the images too).

    Up to ``_EXACT_MAX_SIZE`` px the steps share one random stream, as always;
    above, each step has its own seeded stream, so steps run on parallel
    threads and the images do not depend on how many.
    """
    if image_size <= _EXACT_MAX_SIZE:
        return _CHUNK
    return max(1, _CHUNK_PIXELS // (image_size * image_size))


def generate_images(
    n: int,
    image_size: int,
    class_proportions: list[float],
    difficulty: float,
    seed: int,
    workers: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Images (uint8 ``N x 1 x S x S``) and their classes, deterministic by ``seed``.

    Above ``_EXACT_MAX_SIZE`` px, chunks render on ``workers`` threads (numpy
    releases the GIL in the heavy work); the images are the same for any count.
    """
    rng = np.random.default_rng(seed)
    props = np.asarray(class_proportions, dtype=np.float64)
    props /= props.sum()
    counts = np.floor(props * n).astype(int)
    counts[: n - counts.sum()] += 1  # give the rounding remainder to the first classes
    labels = rng.permutation(np.repeat(np.arange(len(props)), counts))
    images = np.empty((n, 1, image_size, image_size), dtype=np.uint8)
    has_normal = len(props) == 3
    chunk = chunk_size(image_size)
    starts = range(0, n, chunk)
    # <= 64 px: one shared stream, steps in order (one thread); above: a stream per step
    streams = None if image_size <= _EXACT_MAX_SIZE else \
        np.random.SeedSequence(seed).spawn(len(starts))

    def render(step: int) -> None:
        start = starts[step]
        step_rng = rng if streams is None else np.random.default_rng(streams[step])
        images[start:start + chunk, 0] = _render(step_rng, labels[start:start + chunk],
                                                 image_size, difficulty, has_normal)

    with ThreadPoolExecutor(1 if streams is None else max(1, workers)) as pool:
        list(pool.map(render, range(len(starts))))
    return images, labels.astype(np.int64)


def load_synthetic(**cfg: Any) -> ALDataset:
    """Build the synthetic dataset from its config fields (see ``SyntheticDatasetConf``)."""
    conf = SyntheticDatasetConf(**cfg)
    pool_seed, test_seed, noise_seed = np.random.SeedSequence(conf.seed).generate_state(3)
    args = (conf.image_size, list(conf.class_proportions), conf.difficulty)
    workers = torch.get_num_threads()  # the run's share of the cores
    pool_x, pool_y = generate_images(conf.n_pool, *args, seed=int(pool_seed), workers=workers)
    test_x, test_y = generate_images(conf.n_test, *args, seed=int(test_seed), workers=workers)
    n_classes = len(conf.class_proportions)
    if conf.label_noise > 0:
        pool_y = flip_labels(pool_y, conf.label_noise, n_classes,
                             np.random.default_rng(int(noise_seed)))
    names = ["normal", "benign", "malignant"] if n_classes == 3 else ["benign", "malignant"]
    return ALDataset(
        name=conf.name,
        pool_x=torch.from_numpy(pool_x),
        pool_y=pool_y,
        test_x=torch.from_numpy(test_x),
        test_y=test_y,
        class_names=names,
    )
