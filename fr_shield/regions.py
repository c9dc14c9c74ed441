"""Where in a photo each face's work happens: the regions an attack or a check needs.

A face's aligned crops read only a small part of the photo (the footprint of each crop's warp).
Cutting that region out, with a margin for blur kernels, lets the heavy work of a 12-megapixel
photo cost what its faces cost. Regions snap to JPEG's 8 x 8 block grid, so re-encoding a region
gives the same pixels as re-encoding the whole photo there; regions that overlap are merged.
"""

from __future__ import annotations

import math

import numpy as np

from fr_shield.align import similarity_transform

BLOCK = 8  # JPEG's block size


def crop_footprint(landmarks: np.ndarray, template: np.ndarray, size: tuple[int, int],
                   box: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """Photo-pixel bounding box (x0, y0, x1, y1) of a crop (or of ``box`` in crop pixels)."""
    matrix = similarity_transform(landmarks, template)
    inverse = np.linalg.inv(np.vstack([matrix.astype(np.float64), [0, 0, 1]]))[:2]
    x0, y0, x1, y1 = box if box is not None else (0.0, 0.0, size[1] - 1.0, size[0] - 1.0)
    corners = np.array([[x0, y0, 1], [x1, y0, 1], [x0, y1, 1], [x1, y1, 1]], np.float64) @ inverse.T
    return np.array([corners[:, 0].min(), corners[:, 1].min(), corners[:, 0].max(), corners[:, 1].max()])


def snap_region(rect: np.ndarray, image_hw: tuple[int, int], block: int = BLOCK, minimum: int = 40) -> tuple[int, int, int, int]:
    """Integer region inside the photo, corners on the ``block`` grid (or the photo's edge)."""
    height, width = image_hw
    x0, y0, x1, y1 = rect
    centre_x, centre_y = (x0 + x1) / 2, (y0 + y1) / 2
    x0, x1 = min(x0, centre_x - minimum / 2), max(x1, centre_x + minimum / 2)
    y0, y1 = min(y0, centre_y - minimum / 2), max(y1, centre_y + minimum / 2)
    x0 = max(0, math.floor(x0 / block) * block)
    y0 = max(0, math.floor(y0 / block) * block)
    x1 = min(width, math.ceil(x1 / block) * block)
    y1 = min(height, math.ceil(y1 / block) * block)
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def _overlap(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def cluster_regions(regions: list[tuple[int, int, int, int]]) -> list[tuple[tuple[int, int, int, int], list[int]]]:
    """Merge overlapping regions: [(union region, indices of the faces in it)]."""
    groups = [(tuple(r), [i]) for i, r in enumerate(regions)]
    merged = True
    while merged:
        merged = False
        for i in range(len(groups)):
            for j in range(i + 1, len(groups)):
                if _overlap(groups[i][0], groups[j][0]):
                    a, b = groups[i][0], groups[j][0]
                    union = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                    groups[i] = (union, groups[i][1] + groups[j][1])
                    del groups[j]
                    merged = True
                    break
            if merged:
                break
    return groups
