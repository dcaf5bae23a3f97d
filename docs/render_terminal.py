"""Render captured terminal text (the pipeline's stdout) to a PNG for the README.

python docs/render_terminal.py out.txt docs/terminal-summary.png
"""

import re
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"  # Debian's fonts-dejavu-core
LOG_PREFIX = re.compile(r"^\[[\d\-: ,]+\]\[[\w.]+\]\[INFO\] - ")  # Hydra's log prefix: time and logger


def render(text: str, out: Path, size: int = 15) -> None:
    font = ImageFont.truetype(FONT, size)
    lines = [LOG_PREFIX.sub("", line) for line in text.rstrip().splitlines()]
    width = max(font.getlength(line) for line in lines)
    step = sum(font.getmetrics())  # ascent + descent: box-drawing lines join up
    image = Image.new("RGB", (int(width) + 32, step * len(lines) + 32), "#1e1e1e")
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((16, 16 + i * step), line, font=font, fill="#d4d4d4")
    image.save(out)


if __name__ == "__main__":
    render(Path(sys.argv[1]).read_text(encoding="utf-8"), Path(sys.argv[2]))
