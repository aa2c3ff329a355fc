"""fastai's ``aug_transforms`` defaults as torchvision.transforms.v2 transforms, on whole batches.

fastai composes its random crop, flip, rotation, zoom and perspective warp into a single
coordinate transform and resamples each image once. ``Warp`` does the same as one v2
transform: the parts become 3x3 matrices that map output pixels to source pixels and their
product is applied in one resample. A chain of separate v2 transforms (RandomResizedCrop,
RandomHorizontalFlip, RandomAffine, RandomPerspective) would resample three times, which
blurs small images and costs about three times as much.

Like fastai's batch transforms, ``BatchAugment`` runs on whole batches where the model runs
(on the GPU when there is one): every image of a batch draws its own parameters, and one
``grid_sample`` resamples the whole batch. Training batches come from ``collate_sources``:
each image as decoded into the cache, at the top left of a canvas as large as the largest,
with its own height and width beside it. On two CPU cores a batch of 32 images at 64 px
takes about 2 ms this way; one Pillow resample per image took 9 ms. ``Warp`` and
``Lighting`` also take one PIL image (Warp only: Pillow's perspective transform), one CHW
tensor or an NCHW batch as plain v2 transforms; tests compare the paths.

``Lighting`` is fastai's brightness and contrast change, per image of a batch.
Out-of-frame areas after a rotation or warp are black, as with torchvision's defaults.
Random numbers come from torch's generator, so ``torch.manual_seed`` makes a run repeatable.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from core.preprocess import IMAGENET_MEAN, IMAGENET_STD


class SourceBatch(NamedTuple):
    """Training images before augmentation: uint8 (N, C, H, W), each image at the top left,
    and each image's (height, width) as an (N, 2) integer tensor."""

    images: torch.Tensor
    sizes: torch.Tensor


def collate_sources(items: list[tuple[torch.Tensor, int]]) -> tuple[SourceBatch, torch.Tensor]:
    """DataLoader collate for CHW uint8 images of different sizes."""
    images = [image for image, _ in items]
    height = max(int(image.shape[1]) for image in images)
    width = max(int(image.shape[2]) for image in images)
    canvas = torch.zeros((len(images), images[0].shape[0], height, width), dtype=torch.uint8)
    for i, image in enumerate(images):
        canvas[i, :, : image.shape[1], : image.shape[2]] = image
    sizes = torch.tensor([[image.shape[1], image.shape[2]] for image in images])
    labels = torch.tensor([label for _, label in items])
    return SourceBatch(canvas, sizes), labels


class Warp(v2.Transform):
    """Random resized crop to ``size`` x ``size``, flip, rotation, zoom and perspective warp,
    resampled once (bilinear), with parameters of its own for each image of a batch."""

    def __init__(
        self,
        size: int,
        min_scale: float = 0.35,  # smallest crop, as a share of the source's area
        ratio: tuple[float, float] = (3 / 4, 4 / 3),  # crop aspect range
        max_rotate: float = 10.0,  # degrees
        max_zoom: float = 1.1,
        max_warp: float = 0.2,
        p_flip: float = 0.5,
        p_affine: float = 0.75,  # rotation and zoom
        p_warp: float = 0.75,
    ) -> None:
        super().__init__()
        self.size = size
        self.min_scale, self.ratio = min_scale, ratio
        self.max_rotate, self.max_zoom, self.max_warp = max_rotate, max_zoom, max_warp
        self.p_flip, self.p_affine, self.p_warp = p_flip, p_affine, p_warp

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        heights, widths = _image_sizes(flat_inputs)
        return self.params(heights, widths)

    def params(self, heights: torch.Tensor, widths: torch.Tensor) -> dict[str, Any]:
        """Parameters for images of these sizes (each at the top left of its canvas)."""
        return {"matrices": self.matrices(heights, widths), "heights": heights, "widths": widths}

    def matrices(self, heights: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
        """(N, 3, 3) float64: output pixel coordinates -> source pixel coordinates.

        Coordinates are continuous (pixel i spans [i, i + 1)), as Pillow's are.
        """
        n = len(heights)
        u = torch.rand(n, 11, dtype=torch.float64)
        flip = torch.where(u[:, 4] < self.p_flip, -1.0, 1.0).to(torch.float64)
        one = torch.ones(n, dtype=torch.float64)
        matrix = (
            self._crop(heights.to(torch.float64), widths.to(torch.float64), u[:, 0:4])
            @ torch.diag_embed(torch.stack([flip, one, one], 1))
            @ self._affine(u[:, 5:8])
            @ self._warp(u[:, 8:11])
            @ _to_unit(self.size)
        )
        return matrix / matrix[:, 2:3, 2:3]

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        matrices = params["matrices"]
        if isinstance(inpt, Image.Image):
            coefficients = matrices[0].flatten()[:8].tolist()
            return inpt.transform(
                (self.size, self.size),
                Image.Transform.PERSPECTIVE,
                tuple(coefficients),
                Image.Resampling.BILINEAR,
            )
        batch = inpt if inpt.ndim == 4 else inpt.unsqueeze(0)
        sizes = (params["heights"], params["widths"])
        out = warp_batch(batch.as_subclass(torch.Tensor), matrices, self.size, sizes)
        out = out if inpt.ndim == 4 else out[0]
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out

    def _crop(self, heights: torch.Tensor, widths: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """torchvision's RandomResizedCrop sampling: a share of the area, an aspect ratio."""
        area = widths * heights * (self.min_scale + (1 - self.min_scale) * u[:, 0])
        lo, hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = torch.exp(lo + (hi - lo) * u[:, 1])
        w = torch.minimum(widths, torch.sqrt(area * aspect))
        h = torch.minimum(heights, torch.sqrt(area / aspect))
        left = (widths - w) * u[:, 2]
        top = (heights - h) * u[:, 3]
        # Unit square [-1, 1]^2 -> the crop, in source pixel coordinates.
        matrix = _eye(len(u))
        matrix[:, 0, 0], matrix[:, 0, 2] = w / 2, left + w / 2
        matrix[:, 1, 1], matrix[:, 1, 2] = h / 2, top + h / 2
        return matrix

    def _affine(self, u: torch.Tensor) -> torch.Tensor:
        angle = torch.deg2rad(self.max_rotate * (2 * u[:, 1] - 1))
        zoom = 1 + (self.max_zoom - 1) * u[:, 2]
        # Zooming in shows a smaller part of the crop: scale the sampling points down.
        c, s = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        matrix = _eye(len(u))
        matrix[:, 0, 0], matrix[:, 0, 1], matrix[:, 1, 0], matrix[:, 1, 1] = c, -s, s, c
        return torch.where((u[:, 0] < self.p_affine)[:, None, None], matrix, _eye(len(u)))

    def _warp(self, u: torch.Tensor) -> torch.Tensor:
        """A perspective tilt: the unit square's corners moved by up to ``max_warp``."""
        mx = self.max_warp * (2 * u[:, 1] - 1)
        my = self.max_warp * (2 * u[:, 2] - 1)
        # fastai's warp: one edge shrinks while the opposite one grows, per axis.
        source = torch.tensor(
            [(-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0)], dtype=torch.float64
        )
        x, y = source[:, 0], source[:, 1]
        target = torch.stack(
            [x * (1 + mx[:, None] * y), y * (1 + my[:, None] * x)], dim=-1
        )  # (N, 4, 2)
        matrix = _homography(source.expand(len(u), 4, 2), target)
        return torch.where((u[:, 0] < self.p_warp)[:, None, None], matrix, _eye(len(u)))


class Lighting(v2.Transform):
    """fastai's lighting: brightness and contrast, each by a factor in [1 - max, 1 + max].

    Contrast scales the distance from the image's mean, brightness scales the result; on
    uint8 the values are clamped to 0-255, on float to 0-1. Tensor images only, one (C, H, W)
    or a batch (N, C, H, W) whose images each draw their own factors.
    """

    _transformed_types = (torch.Tensor,)

    def __init__(self, max_lighting: float = 0.2, p: float = 0.75) -> None:
        super().__init__()
        self.max_lighting, self.p = max_lighting, p

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        image = _image_of(flat_inputs)
        n = image.shape[0] if isinstance(image, torch.Tensor) and image.ndim == 4 else 1
        u = torch.rand(n, 3)
        spread = self.max_lighting
        return {
            "apply": u[:, 0] < self.p,
            "brightness": 1 + spread * (2 * u[:, 1] - 1),
            "contrast": 1 + spread * (2 * u[:, 2] - 1),
        }

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        apply = params["apply"]
        if not bool(apply.any()):
            return inpt
        shape = (-1, 1, 1, 1) if inpt.ndim == 4 else (1, 1, 1)
        device = inpt.device
        contrast = torch.where(apply, params["contrast"], 1.0).view(shape).to(device)
        brightness = torch.where(apply, params["brightness"], 1.0).view(shape).to(device)
        pixels = inpt.as_subclass(torch.Tensor).float()
        mean = pixels.mean(dim=(-3, -2, -1), keepdim=True)
        pixels = ((pixels - mean) * contrast + mean) * brightness
        if inpt.is_floating_point():
            out = pixels.clamp_(0, 1).to(inpt.dtype)
        else:
            out = pixels.clamp_(0, 255).round_().to(inpt.dtype)
        # A tv_tensors.Image stays one, as with torchvision's own transforms.
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out


class BatchAugment:
    """The training augmentation of a SourceBatch, where the model runs: to float, Warp with
    each image's own size, Lighting, ImageNet normalisation. Returns a plain float32
    (N, C, size, size) tensor for the model."""

    def __init__(self, size: int, flip: bool = True) -> None:
        self.warp = Warp(size, p_flip=0.5 if flip else 0.0)
        self.lighting = Lighting()

    def __call__(self, batch: SourceBatch, device: torch.device) -> torch.Tensor:
        images = TF.to_dtype(batch.images.to(device, non_blocking=True), torch.float32, scale=True)
        params = self.warp.params(batch.sizes[:, 0], batch.sizes[:, 1])
        warped = self.warp.transform(images, params)
        return _imagenet_normalise(self.lighting(warped))


def normalise_batch(batch: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, C, H, W) -> float32 scaled to [0, 1], ImageNet-normalised: the same
    numbers as core.preprocess's transform."""
    return _imagenet_normalise(TF.to_dtype(batch, torch.float32, scale=True))


def _imagenet_normalise(scaled: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] -> ImageNet-normalised, in place."""
    return TF.normalize(scaled, list(IMAGENET_MEAN), list(IMAGENET_STD), inplace=True)


def warp_batch(
    batch: torch.Tensor,
    matrices: torch.Tensor,
    size: int,
    sizes: tuple[torch.Tensor, torch.Tensor],
) -> torch.Tensor:
    """Resample each image of ``batch`` (N, C, H, W) through its own matrix (output pixel ->
    source pixel, continuous coordinates); the input's dtype back.

    As Pillow's bilinear transform: a point outside its image is black, one inside blends
    only that image's pixels (the edge pixels repeat; the canvas around it is never read).
    ``sizes``: each image's (heights, widths) at the top left of the canvas.
    """
    n, _, height, width = batch.shape
    device = batch.device
    limits = torch.stack([sizes[1], sizes[0]], dim=1).to(device, torch.float32).view(n, 1, 2)
    mapping = matrices.to(device, torch.float32)
    centres = torch.arange(size, device=device, dtype=torch.float32) + 0.5
    ys, xs = torch.meshgrid(centres, centres, indexing="ij")
    points = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1).view(1, size * size, 3)
    mapped = points @ mapping.transpose(1, 2)  # (N, size * size, 3)
    xy = mapped[..., :2] / mapped[..., 2:]  # source pixel coordinates, x then y
    inside = ((xy >= 0) & (xy < limits)).all(dim=-1)
    # Clamped to the outermost pixel centres: bilinear weights fall on the image's own pixels.
    xy = torch.minimum(xy.clamp(min=0.5), limits - 0.5)
    # To grid_sample's [-1, 1] over the canvas (align_corners=False: -1 is the outer edge of
    # the first pixel, as coordinate 0 is in Pillow's convention).
    canvas = torch.tensor([width, height], device=device, dtype=torch.float32)
    grid = (xy * (2 / canvas) - 1).view(n, size, size, 2)
    pixels = batch if batch.is_floating_point() else batch.float()
    out = F.grid_sample(pixels, grid, mode="bilinear", padding_mode="border", align_corners=False)
    out = out * inside.view(n, 1, size, size)
    if batch.is_floating_point():
        return out.to(batch.dtype)
    return out.round_().clamp_(0, 255).to(batch.dtype)


def _image_of(flat_inputs: list[Any]) -> Any:
    """The image among a transform's inputs: a PIL image or tv_tensors.Image, else the
    first tensor (a plain image tensor)."""
    for inpt in flat_inputs:
        if isinstance(inpt, Image.Image | tv_tensors.Image):
            return inpt
    for inpt in flat_inputs:
        if isinstance(inpt, torch.Tensor):
            return inpt
    raise TypeError("an image (PIL image or tensor) is needed")


def _image_sizes(flat_inputs: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """(heights, widths) of the image, or of every image of a batch."""
    image = _image_of(flat_inputs)
    height, width = TF.get_size(image)
    n = image.shape[0] if isinstance(image, torch.Tensor) and image.ndim == 4 else 1
    return torch.full((n,), height), torch.full((n,), width)


def _eye(n: int) -> torch.Tensor:
    return torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)


def _to_unit(size: int) -> torch.Tensor:
    """Output coordinates -> the unit square [-1, 1]^2. Pillow's coordinates are continuous
    (pixel i spans [i, i + 1)) and it samples at pixel centres itself."""
    return torch.tensor([[2 / size, 0, -1], [0, 2 / size, -1], [0, 0, 1]], dtype=torch.float64)


def _homography(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) projective maps sending each of the 4 source points to its target point."""
    n = len(source)
    x, y = source[..., 0], source[..., 1]
    tx, ty = target[..., 0], target[..., 1]
    zero, one = torch.zeros_like(x), torch.ones_like(x)
    rows_x = torch.stack([x, y, one, zero, zero, zero, -tx * x, -tx * y], dim=-1)
    rows_y = torch.stack([zero, zero, zero, x, y, one, -ty * x, -ty * y], dim=-1)
    rows = torch.stack([rows_x, rows_y], dim=2).reshape(n, 8, 8)
    rhs = torch.stack([tx, ty], dim=2).reshape(n, 8)
    h = torch.linalg.solve(rows, rhs)
    return torch.cat([h, torch.ones(n, 1, dtype=h.dtype)], dim=1).view(n, 3, 3)
