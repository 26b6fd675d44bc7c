"""One labelled PNG grid of samples: rows are samplers, columns are NFE budgets, each cell the same seeds
(what ``diffusers-geo demo`` and ``diffusers-geo eval`` draw). A cell is anything with ``scheduler``,
``nfe_target``, ``steps``, ``model_calls`` and ``images`` (floats in [0, 1], ``(N, H, W, C)``, or ``None``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont


# --------------------------------------------------------------------------------------------------
def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed-size bitmap font
        return ImageFont.load_default()


def _thumbnails(images: np.ndarray, side: int) -> list[Image.Image]:
    pixels = (np.clip(images, 0, 1) * 255).round().astype(np.uint8)
    thumbs = []
    for image in pixels:
        pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).convert("RGB")
        resample = Image.NEAREST if pil.height < side else Image.LANCZOS
        thumbs.append(pil.resize((round(side * pil.width / pil.height), side), resample))
    return thumbs


def thumbnail_side(height: int) -> int:
    """Display height of one image: small images are enlarged by an integer factor, large ones shrunk."""
    if height < 48:
        return height * math.ceil(48 / height)
    return min(height, 160)


def render_grid(cells: Sequence[Any], title: str, ours: Sequence[str] = ()) -> Image.Image:
    """Rows: samplers (ours in blue); columns: target NFE; each cell: the images of every seed, and the
    steps taken (plus the model calls when fewer than the column's NFE)."""
    names = list(dict.fromkeys(c.scheduler for c in cells))
    nfes = list(dict.fromkeys(c.nfe_target for c in cells))
    by_key = {(c.scheduler, c.nfe_target): c for c in cells}
    first = next((c.images for c in cells if c.images is not None), None)
    if first is None:
        raise ValueError("no sampler produced images; check --nfe")
    n, height = first.shape[0], first.shape[1]
    side = thumbnail_side(height)
    thumb_w = round(side * first.shape[2] / height)
    rows = max(1, math.ceil(math.sqrt(n / 2))) if n > 4 else 1
    cols = math.ceil(n / rows)
    gap, pad = 2, 12
    cell_w, cell_h = cols * (thumb_w + gap) - gap, rows * (side + gap) - gap

    font, small, big = _font(15), _font(12), _font(17)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max(measure.textbbox((0, 0), name, font=font)[2] for name in names) + 2 * pad
    caption_h, header_h, title_h = 18, 24, 30
    width = label_w + len(nfes) * (cell_w + pad) + pad
    height_px = title_h + header_h + len(names) * (cell_h + caption_h + pad) + pad
    width = max(width, math.ceil(measure.textlength(title, font=big)) + 3 * pad)
    grid = Image.new("RGB", (width, height_px), "white")
    draw = ImageDraw.Draw(grid)
    draw.text((pad, 6), title, fill="black", font=big)
    for j, nfe in enumerate(nfes):
        draw.text((label_w + j * (cell_w + pad), title_h), f"NFE {nfe}", fill="black", font=font)
    for i, name in enumerate(names):
        top = title_h + header_h + i * (cell_h + caption_h + pad)
        color = (20, 60, 170) if name in ours else (0, 0, 0)
        draw.text((pad, top + cell_h // 2 - 8), name, fill=color, font=font)
        for j, nfe in enumerate(nfes):
            left = label_w + j * (cell_w + pad)
            cell = by_key.get((name, nfe))
            if cell is None or cell.images is None:
                draw.rectangle((left, top, left + cell_w, top + cell_h), outline=(200, 200, 200))
                draw.text((left + 4, top + 4), "no step fits", fill=(150, 0, 0), font=small)
                continue
            for k, thumb in enumerate(_thumbnails(cell.images, side)):
                r, c = divmod(k, cols)
                grid.paste(thumb, (left + c * (thumb_w + gap), top + r * (side + gap)))
            caption = f"{cell.steps} steps"
            if cell.model_calls < nfe:
                caption += f", {cell.model_calls} calls"
            draw.text((left, top + cell_h + 2), caption, fill=(90, 90, 90), font=small)
    return grid
