"""Draw the Teams app icons (committed as teams/color.png and teams/outline.png); rerun to change them.

Teams wants a 192x192 full-colour icon and a 32x32 outline icon that is white on a transparent background.
    .venv/bin/python scripts/teams_icons.py
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parent.parent
BLUE = (0, 94, 184, 255)       # the manifest's accentColor, #005EB8
WHITE = (255, 255, 255, 255)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:           # Pillow older than 10.1: bitmap font only
        return ImageFont.load_default()


def color_icon(size: int = 192) -> Image.Image:
    """A blue tile with an open guideline page and "CG81" beneath it."""
    img = Image.new("RGBA", (size, size), BLUE)
    d = ImageDraw.Draw(img)
    # The page: a white sheet with a folded corner and four text lines.
    left, top, right, bottom = 56, 28, 136, 124
    d.polygon([(left, top), (right - 20, top), (right, top + 20), (right, bottom), (left, bottom)], fill=WHITE)
    d.polygon([(right - 20, top), (right - 20, top + 20), (right, top + 20)], fill=(178, 206, 236, 255))
    for i, width in enumerate((56, 60, 48, 60)):
        y = top + 34 + i * 15
        d.rounded_rectangle([left + 10, y, left + 10 + width, y + 6], radius=3, fill=BLUE)
    font = _font(38)
    text = "CG81"
    box = d.textbbox((0, 0), text, font=font)
    d.text(((size - (box[2] - box[0])) / 2 - box[0], 138 - box[1]), text, font=font, fill=WHITE)
    return img


def outline_icon(size: int = 32) -> Image.Image:
    """The same page as a white outline on transparency (Teams' rule for outline icons)."""
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    left, top, right, bottom = 6, 2, 26, 29
    d.line([(left, top), (right - 6, top), (right, top + 6), (right, bottom), (left, bottom), (left, top)],
           fill=WHITE, width=2, joint="curve")
    d.line([(right - 6, top), (right - 6, top + 6), (right, top + 6)], fill=WHITE, width=2)
    for i in range(3):
        y = top + 11 + i * 5
        d.line([(left + 4, y), (right - 5, y)], fill=WHITE, width=2)
    return img


def main() -> None:
    out = ROOT / "teams"
    out.mkdir(exist_ok=True)
    color_icon().save(out / "color.png", optimize=True)
    outline_icon().save(out / "outline.png", optimize=True)
    print(f"wrote {out / 'color.png'} (192x192) and {out / 'outline.png'} (32x32)")


if __name__ == "__main__":
    main()
