"""Names under composite tiles, drawn with a real font so that Czech names keep their
diacritics ("Jiří Nováček", not "JIRI NOVACEK").

DejaVu Sans (Debian's fonts-dejavu-core) through Pillow, anti-aliased; each name is
drawn once per size and width and kept (a name changes rarely, a frame comes 15-30
times a second). Without DejaVu on the machine, Pillow's own scalable font is used and
the log says so.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

logger = logging.getLogger(__name__)

# Where distributions put DejaVu Sans: Debian/Ubuntu, Fedora, Arch.
FONT_PATHS = (
    Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
    Path("/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf"),
    Path("/usr/share/fonts/TTF/DejaVuSans.ttf"),
)
ELLIPSIS = "…"


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for path in FONT_PATHS:
        if path.exists():
            return ImageFont.truetype(str(path), size)
    logger.warning("DejaVu Sans not found (apt-get install fonts-dejavu-core): names under "
                   "the composite's tiles use Pillow's built-in font")
    return ImageFont.load_default(size)


def _width(font: ImageFont.FreeTypeFont | ImageFont.ImageFont, text: str) -> int:
    left, _top, right, _bottom = font.getbbox(text)
    return int(right - left)


@lru_cache(maxsize=1024)
def render(text: str, height: int, max_width: int) -> np.ndarray:
    """Coverage of ``text`` (0-255, uint8), ``height`` pixels high with room for accents
    above capitals, at most ``max_width`` wide: a name too long ends in an ellipsis."""
    text = " ".join(text.split())
    if not text or height < 4 or max_width < 1:
        return np.zeros((max(height, 0), 0), dtype=np.uint8)
    # Ascent with accents and descent together take about 1.2 em in DejaVu Sans.
    font = _font(max(4, int(height / 1.2)))
    if _width(font, text) > max_width:
        while text and _width(font, text + ELLIPSIS) > max_width:
            text = text[:-1]
        text = text.rstrip() + ELLIPSIS if text else ""
    if not text:
        return np.zeros((height, 0), dtype=np.uint8)
    left, _top, right, _bottom = font.getbbox(text)
    width = min(max_width, int(right - left) + 1)
    image = Image.new("L", (width, height), 0)
    # Baseline where the font's ascent ends, so every name sits on the same line.
    ascent, descent = font.getmetrics() if isinstance(font, ImageFont.FreeTypeFont) else (height, 0)
    top = (height - ascent - descent) // 2
    ImageDraw.Draw(image).text((-left, top), text, fill=255, font=font)
    coverage = np.asarray(image, dtype=np.uint8)
    coverage.setflags(write=False)  # cached: shared between callers
    return coverage
