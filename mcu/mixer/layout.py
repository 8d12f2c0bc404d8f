"""Tile geometry for the composite: a grid, or an active speaker above a strip.

Every coordinate and size is even, so tiles land on whole chroma samples of a
YUV 4:2:0 picture and need no subsampling of their own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

LayoutKind = Literal["grid", "speaker"]

_GAP = 4  # pixels between tiles


@dataclass(frozen=True, slots=True)
class Tile:
    """A picture area and, below it, a strip for the name."""

    x: int
    y: int
    width: int
    height: int
    label_height: int

    @property
    def label_y(self) -> int:
        return self.y + self.height


def _even(v: float) -> int:
    return max(0, int(v) // 2 * 2)


def label_scale(cell_height: int) -> int:
    """Size step of a cell's name strip (7 px a step, plus a margin): 1 on thumbnails,
    2 from about 240 pixels up (mcu/mixer/font.py fits the name into it)."""
    return max(1, min(4, cell_height // 120))


def _cell(x: float, y: float, w: float, h: float, labels: bool) -> Tile:
    x0, y0 = _even(x), _even(y)
    w0, h0 = _even(w), _even(h)
    label = _even(7 * label_scale(h0) + 6) if labels and h0 >= 60 else 0
    return Tile(x0, y0, w0, max(2, h0 - label), label)


def grid(count: int, width: int, height: int, labels: bool = True) -> list[Tile]:
    """1, 2x2, 3x3 ... tiles; an incomplete last row is centred."""
    if count <= 0:
        return []
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    cell_w = (width - _GAP * (cols + 1)) / cols
    cell_h = (height - _GAP * (rows + 1)) / rows
    tiles = []
    for i in range(count):
        row, col = divmod(i, cols)
        in_row = min(cols, count - row * cols)
        offset = (cols - in_row) * (cell_w + _GAP) / 2
        x = _GAP + offset + col * (cell_w + _GAP)
        y = _GAP + row * (cell_h + _GAP)
        tiles.append(_cell(x, y, cell_w, cell_h, labels))
    return tiles


def speaker(count: int, width: int, height: int, labels: bool = True) -> list[Tile]:
    """The first source large on top, the others as thumbnails in a strip below."""
    if count <= 1:
        return grid(count, width, height, labels)
    strip_h = height / 4
    main = _cell(_GAP, _GAP, width - 2 * _GAP, height - strip_h - 2 * _GAP, labels)
    others = count - 1
    per_row = max(others, 4)
    thumb_w = (width - _GAP * (per_row + 1)) / per_row
    offset = (per_row - others) * (thumb_w + _GAP) / 2
    y = height - strip_h
    thumbs = [
        _cell(_GAP + offset + i * (thumb_w + _GAP), y, thumb_w, strip_h - _GAP, labels)
        for i in range(others)
    ]
    return [main, *thumbs]


def tiles_for(kind: LayoutKind, count: int, width: int, height: int) -> list[Tile]:
    return speaker(count, width, height) if kind == "speaker" else grid(count, width, height)
