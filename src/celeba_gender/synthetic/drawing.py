"""How one synthetic person is drawn: shapes on a 2x supersampled RGBA layer, before pose and lighting.

The shapes follow the identity parameters and per-image appearance that `synthetic.faces` draws from
its random streams; the only randomness here is what each part draws from the image's own Generator, in
a fixed order (so every change to the order of drawing changes every image).  numpy + PIL only.
"""

from __future__ import annotations

import dataclasses

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from numpy.random import Generator
from numpy.typing import ArrayLike
from PIL import Image, ImageDraw

from celeba_gender.shards.attributes import CELEBA_SIZE

Identity = dict[str, Any]  # fixed face parameters of one identity (synthetic.faces.identity_parameters)
Appearance = dict[str, Any]  # per-image choices: pose, expression, clothes, accessories

S = 2  # drawing supersampling factor: shapes are drawn at 2x and reduced, for anti-aliasing
H, W = CELEBA_SIZE
MARGIN = 24  # px drawn below the frame
CX, EYE_Y = W / 2, 104.0  # eye line at ~48% height, like CelebA's aligned crops
HAIR_RGB = {"black": (28, 22, 20), "brown": (92, 60, 38), "blond": (205, 170, 110),
            "red": (140, 62, 30), "gray": (165, 162, 160)}


def _pts(xs: Iterable[float], ys: Iterable[float]) -> list[tuple[float, float]]:
    """Flat scaled point list for ImageDraw from 1x-space coordinate arrays."""
    return [(float(x) * S, float(y) * S) for x, y in zip(xs, ys)]


def _box(x0: float, y0: float, x1: float, y1: float) -> list[float]:
    """A 1x-space box scaled to the 2x canvas."""
    return [x0 * S, y0 * S, x1 * S, y1 * S]


def _col(rgb: Iterable[float], a: int = 255) -> tuple[int, ...]:
    """An RGBA fill colour, each channel clipped to 0..255."""
    return tuple(min(255, max(0, int(v))) for v in rgb) + (a,)


def noise(r: Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Cheap approximately standard-normal float32 noise (sum of two uniform bytes, a triangular
    distribution): ~10x faster than Generator.standard_normal, which dominated render time."""
    n = int(np.prod(shape))
    b = np.frombuffer(r.bytes(2 * n), np.int8).astype(np.float32).reshape(2, *shape)
    return (b[0] + b[1]) * np.float32(1 / 104.5)


def texture(r: Generator, rgb: ArrayLike, streak: float, grain: float = 0.06) -> Image.Image:
    """Full-canvas RGB texture: `rgb` modulated by vertical streaks (hair) plus fine grain.

    Made at 1x and upscaled: the canvas is reduced to 1x later anyway, and it is 4x cheaper."""
    h = H + MARGIN
    small = r.standard_normal((6, 60)).astype(np.float32)
    low = np.asarray(Image.fromarray(small).resize((W, h), Image.BICUBIC))
    f = 1 + streak * low + grain * noise(r, (h, W))
    x = np.full((h, W, 4), 255, np.uint8)  # RGBA, so pasting into the RGBA layer needs no convert
    x[..., :3] = np.clip(np.asarray(rgb, np.float32) * f[..., None], 0, 255)
    return Image.fromarray(x).resize((W * S, h * S), Image.NEAREST)


def _paste(layer: Image.Image, src: Image.Image | ArrayLike,
           draw_fn: Callable[[ImageDraw.ImageDraw], object]) -> None:
    """Blend `src` (a layer-sized image, or an RGB colour) into `layer` through a mask drawn by
    draw_fn(mask ImageDraw); mask values < 255 are translucent.  This is the only way to draw
    translucently here: ImageDraw does not blend into RGBA images, it would punch holes."""
    mask = Image.new("L", layer.size, 0)
    draw_fn(ImageDraw.Draw(mask))
    box = mask.getbbox()  # paste only the drawn region: whole-canvas pastes were a hot spot
    if box:
        layer.paste(src.crop(box) if isinstance(src, Image.Image) else _col(src), box, mask.crop(box))


def _face_outline(p: Identity, cy: float, fx: float) -> tuple[np.ndarray, np.ndarray]:
    """Superellipse face: round top, lower-half exponent `jaw` (2 = oval, >2.5 = square jaw)."""
    t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    n = np.where(s > 0, p["jaw"], 2.2)
    b = np.where(s > 0, p["length"], 58.0)
    xs = fx + p["width"] * np.sign(c) * np.abs(c) ** (2 / n)
    ys = cy + b * np.sign(s) * np.abs(s) ** (2 / n)
    return xs, ys


def _hair_arc(p: Identity, cy: float, extra_w: float, y_max: float) -> tuple[np.ndarray, np.ndarray]:
    """Outer head-hair arc from the left side over the top to the right side (y <= y_max)."""
    t = np.linspace(np.pi, 2 * np.pi, 40)
    xs = CX + (p["width"] + extra_w) * np.cos(t)
    ys = cy + (58 + p["vol"]) * np.sin(t)
    keep = ys <= y_max
    return xs[keep], ys[keep]


@dataclasses.dataclass(frozen=True)
class _Canvas:
    """What every part of one person's drawing shares: the layer and its pen, who is drawn and how they look
    today, the random draws, the skin colour and hair texture, and where the face sits (``cy`` its centre's row,
    ``fx`` its centre's column, which shifts with yaw; ``ey`` the eye row)."""

    layer: Image.Image
    d: ImageDraw.ImageDraw
    p: Identity
    a: Appearance
    r: Generator
    skin: np.ndarray
    hair_tex: Image.Image
    cy: float
    fx: float
    ey: float


def draw_person(p: Identity, a: Appearance, r: Generator, skin: np.ndarray, hair_tex: Image.Image) -> Image.Image:
    """Draw one person onto a transparent 2x RGBA layer (before global pose and lighting)."""
    # Extra rows below the frame so that rotated/shifted poses never reveal a cut-off torso.
    layer = Image.new("RGBA", (W * S, (H + MARGIN) * S), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer, "RGBA")
    cy, fx, ey = EYE_Y + 8, CX + a["yaw"] * 5, EYE_Y  # face centre; features shift with yaw
    canvas = _Canvas(layer=layer, d=d, p=p, a=a, r=r, skin=skin, hair_tex=hair_tex, cy=cy, fx=fx, ey=ey)
    _draw_body(canvas)
    _draw_face(canvas)
    _draw_eyes(layer, d, p, a, skin, fx, ey)
    if p["hair_len"] != "bald":
        _draw_fringe(layer, p, hair_tex, cy, ey)
        if p["sideburns"]:
            centres = [CX + k * (p["width"] - 0.5) for k in (-1, 1)]  # 5 px wide, over the face edge
            _paste(layer, hair_tex, lambda m: [m.rectangle(_box(c - 2.5, ey - 12, c + 2.5, ey + 16), fill=255)
                                               for c in centres])
    _draw_accessories(layer, d, p, a, cy, fx, ey)
    return layer


def _draw_body(c: _Canvas) -> None:
    """Back hair, shirt (and tie or necklace), neck, long locks over the shoulders, ears, earrings."""
    layer, d, p, a, r, skin, hair_tex, cy, ey = c.layer, c.d, c.p, c.a, c.r, c.skin, c.hair_tex, c.cy, c.ey
    def wob(ys: np.ndarray) -> np.ndarray:  # wavy hair edges
        return p["wavy"] * 3 * np.sin(ys / 6 + p["skin"] * 9)

    if p["hair_len"] in ("long", "medium"):  # behind head, neck and shoulders
        y_end = r.uniform(205, 230) if p["hair_len"] == "long" else r.uniform(150, 172)
        ax, ay = _hair_arc(p, cy, p["side"], cy)
        ys = np.linspace(cy, y_end, 12)
        xs_r, xs_l = CX + p["width"] + p["side"] + wob(ys), CX - p["width"] - p["side"] - wob(ys)
        _paste(layer, hair_tex, lambda m: m.polygon(
            _pts(ax, ay) + _pts(xs_r, ys) + _pts(xs_l[::-1], ys[::-1]), fill=255))
    d.ellipse(_box(CX - p["shoulders"], 192, CX + p["shoulders"], 300), fill=_col(a["shirt"]))
    d.rectangle(_box(CX - p["neck"], cy + 20, CX + p["neck"], 200), fill=_col(skin * 0.88))
    if a["necktie"]:  # white collar and a tie
        d.polygon(_pts([CX - 14, CX + 14, CX], [192, 192, 212]), fill=(240, 240, 240, 255))
        d.polygon(_pts([CX - 4, CX + 4, CX + 6, CX, CX - 6], [198, 198, 225, 232, 225]), fill=_col(a["tie"]))
    else:  # open neckline
        d.polygon(_pts([CX - p["neck"] - 4, CX + p["neck"] + 4, CX], [193, 193, 206]), fill=_col(skin * 0.88))
    if a["necklace"]:
        for x in np.linspace(-p["neck"] - 2, p["neck"] + 2, 11):
            y = 195 + 6 * (1 - (x / (p["neck"] + 2)) ** 2)
            d.ellipse(_box(CX + x - 1.3, y - 1.3, CX + x + 1.3, y + 1.3), fill=(235, 215, 150, 255))
    if p["hair_len"] == "long":  # locks falling in front of the shoulders
        for sgn in (-1, 1):
            ys = np.linspace(ey, r.uniform(205, 225), 10)
            inner = CX + sgn * np.linspace(p["width"] - 6, p["neck"] + 2, 10)
            outer = CX + sgn * (p["width"] + p["side"] + wob(ys))
            _paste(layer, hair_tex, lambda m: m.polygon(_pts(inner, ys) + _pts(outer[::-1], ys[::-1]), fill=255))
    for sgn in (-1, 1):  # ears, then earrings (which stay visible over long hair)
        ex = CX + sgn * (p["width"] + 1)
        if not p["ears_hidden"]:
            d.ellipse(_box(ex - 5, ey - 4, ex + 5, ey + 18), fill=_col(skin * 0.9))
        if a["earrings"]:
            d.ellipse(_box(ex - 2.5, ey + 18, ex + 2.5, ey + 25), fill=_col(a["earring_rgb"]))


def _draw_face(c: _Canvas) -> None:
    """Face outline with shading, stubble or beard, blush, nose, mouth, goatee and moustache."""
    layer, d, p, a, r, skin, hair_tex, cy, fx, ey = (c.layer, c.d, c.p, c.a, c.r, c.skin, c.hair_tex, c.cy, c.fx,
                                                     c.ey)
    xs, ys = _face_outline(p, cy, CX)
    d.polygon(_pts(xs, ys), fill=_col(skin * 0.9))
    d.polygon(_pts(CX + (xs - CX) * 0.9 + a["yaw"] * 2, cy + (ys - cy) * 0.93), fill=_col(skin))
    if p["double_chin"]:
        d.arc(_box(fx - 14, cy + p["length"] - 9, fx + 14, cy + p["length"] + 1), 20, 160,
              fill=_col(skin * 0.75), width=S)
    if a["stubble"] or p["beard"] == "full":  # speckled shadow, or a full beard in hair colour
        low = ys > ey + 16  # jaw outline (a little fuller) up to a line under the nose and cheeks
        beard = _pts(CX + (xs[low] - CX) * 1.03, cy + (ys[low] - cy) * 1.04) + _pts(
            [CX - p["width"], fx - 20, fx - 12, fx, fx + 12, fx + 20, CX + p["width"]],
            [ey + 16, ey + 31, ey + 34, ey + 33, ey + 34, ey + 31, ey + 16])
        tex = hair_tex if p["beard"] == "full" else texture(r, skin * 0.5, 0.0, grain=0.4)
        alpha = 255 if p["beard"] == "full" else int(r.uniform(110, 170))
        _paste(layer, tex, lambda m: m.polygon(beard, fill=alpha))
    if a["blush"]:
        _paste(layer, (225, 90, 100), lambda m: [
            m.ellipse(_box(fx + k * 22 - 8, ey + 16, fx + k * 22 + 8, ey + 28), fill=60) for k in (-1, 1)])
    nw, ny = 7.5 + 3 * p["big_nose"], ey + 23

    def shading(m: ImageDraw.ImageDraw) -> None:  # nose bridge, and cheekbone shadows for High_Cheekbones
        m.line(_pts([fx + 3, fx + 4, fx + 2], [ey + 4, ny - 6, ny]), fill=150, width=S)
        for k in (-1, 1) if a["cheekbones"] else ():
            m.arc(_box(fx + k * 24 - 9, ey + 10, fx + k * 24 + 9, ey + 30), 60, 120, fill=150, width=S)
    _paste(layer, skin * 0.8, shading)
    for k in (-1, 1):  # nostrils
        d.ellipse(_box(fx + k * nw * 0.45 - 2.2, ny - 1.5, fx + k * nw * 0.45 + 2.2, ny + 1.5), fill=_col(skin * 0.45))
    if p["pointy"]:
        d.polygon(_pts([fx - 2, fx + 2, fx], [ny - 3, ny - 3, ny + 1]), fill=_col(skin * 0.85))
    _draw_mouth(d, p, a, skin, fx, ey + 41)
    if p["beard"] in ("goatee", "full"):
        gy = ey + 48
        _paste(layer, hair_tex, lambda m: m.polygon(
            _pts([fx - 10, fx + 10, fx + 7, fx, fx - 7], [gy, gy, gy + 16, gy + 20, gy + 16]), fill=255))
    if p["mustache"]:
        my = ey + 35
        d.polygon(_pts([fx - 14, fx - 4, fx + 4, fx + 14, fx + 9, fx - 9], [my + 6, my, my, my + 6, my + 4, my + 4]),
                  fill=_col(HAIR_RGB[p["hair"]]))


def _draw_accessories(layer: Image.Image, d: ImageDraw.ImageDraw, p: Identity, a: Appearance,
                      cy: float, fx: float, ey: float) -> None:
    """Glasses (clear or sunglasses) and a hat, drawn over everything else."""
    if a["glasses"]:
        frame = (20, 20, 25, 255) if not a["sun"] else (10, 10, 10, 255)
        lens = [_box(fx + k * p["eye_dx"] - 12, ey - 7, fx + k * p["eye_dx"] + 12, ey + 8) for k in (-1, 1)]
        _paste(layer, (15, 15, 20) if a["sun"] else (200, 220, 235),  # dark or faintly tinted lenses
               lambda m: [m.rounded_rectangle(b, radius=4 * S, fill=225 if a["sun"] else 40) for b in lens])
        for k, b in zip((-1, 1), lens):
            d.rounded_rectangle(b, radius=4 * S, outline=frame, width=int(1.5 * S))
            d.line(_pts([fx + k * (p["eye_dx"] + 12), CX + k * p["width"]], [ey - 3, ey - 4]), fill=frame, width=S)
        d.line(_pts([fx - p["eye_dx"] + 12, fx + p["eye_dx"] - 12], [ey - 3, ey - 3]), fill=frame, width=S)
    if a["hat"]:
        top = cy - 58 - p["vol"] - 4
        d.chord(_box(CX - p["width"] - 7, top, CX + p["width"] + 7, 2 * (ey - 20) - top), 180, 360,
                fill=_col(a["hat_rgb"]))
        d.rectangle(_box(CX - p["width"] - 9, ey - 24, CX + p["width"] + 9, ey - 17), fill=_col(a["hat_rgb"] * 0.7))


def _draw_fringe(layer: Image.Image, p: Identity, hair_tex: Image.Image, cy: float, ey: float) -> None:
    """Hair over the top of the head down to the hairline (bangs low, receding high)."""
    ax, ay = _hair_arc(p, cy, 3 if p["hair_len"] in ("short", "bald") else 6, ey - 4)
    y_hl = ey - (14 if p["bangs"] else 42 if p["receding"] else 30)
    hx = np.linspace(CX + p["width"], CX - p["width"], 25)
    u = np.abs(hx - CX) / p["width"]
    hy = y_hl + (ey - 6 - y_hl) * u ** (6 if p["bangs"] else 2)
    if p["bangs"]:
        hy = hy + 2.5 * (np.arange(25) % 2)  # ragged fringe edge
    _paste(layer, hair_tex, lambda m: m.polygon(_pts(ax, ay) + _pts(hx, hy), fill=255))


def _draw_mouth(d: ImageDraw.ImageDraw, p: Identity, a: Appearance, skin: np.ndarray, fx: float, my: float
                ) -> None:
    """Lips whose corners rise with the smile; optional open mouth with teeth; lipstick."""
    w, s = p["mouth_w"] + 2 * a["smile"], a["smile"]
    x = np.linspace(-w, w, 13)
    line = my - 4.5 * s * (x / w) ** 2
    gap = a["open"] * (1 - (x / w) ** 2)
    up, lo = 2.6 + 1.2 * p["big_lips"], 3.6 + 1.6 * p["big_lips"]
    top = line - up * (1 - (x / w) ** 2) ** 0.5 + 0.8 * np.exp(-(x / 2.5) ** 2)
    bot = line + gap + lo * (1 - (x / w) ** 2) ** 0.5
    lip = _col(a["lip_rgb"]) if a["lipstick"] else _col(skin * np.array([0.82, 0.6, 0.6]))
    if a["open"] > 0:
        d.polygon(_pts(fx + x, line) + _pts(fx + x[::-1], (line + gap)[::-1]), fill=(60, 20, 25, 255))
        if s > 0.4:
            d.polygon(_pts(fx + x * 0.8, line) + _pts(fx + x[::-1] * 0.8, (line + gap * 0.45)[::-1]),
                      fill=(235, 232, 220, 255))
    d.polygon(_pts(fx + x, top) + _pts(fx + x[::-1], line[::-1]), fill=lip)
    d.polygon(_pts(fx + x, line + gap) + _pts(fx + x[::-1], bot[::-1]), fill=lip)
    d.line(_pts(fx + x, line), fill=_col(skin * 0.4), width=S)


def _draw_eyes(layer: Image.Image, d: ImageDraw.ImageDraw, p: Identity, a: Appearance, skin: np.ndarray,
               fx: float, ey: float) -> None:
    """Eyes (white, iris, pupil, lid), makeup, under-eye bags and eyebrows."""
    hw, hh = p["eye_w"], 1.8 if p["narrow"] else 2.8
    brow_rgb = np.array(HAIR_RGB[p["hair"]]) * (0.6 if p["hair"] in ("blond", "gray") else 0.8)
    if a["makeup"]:  # eyeshadow
        _paste(layer, a["shadow_rgb"], lambda m: [m.ellipse(_box(
            fx + k * p["eye_dx"] - hw - 1, ey - hh - 4, fx + k * p["eye_dx"] + hw + 1, ey + 1), fill=110)
            for k in (-1, 1)])
    for sgn in (-1, 1):
        ex = fx + sgn * p["eye_dx"]
        if p["bags"]:
            d.arc(_box(ex - hw, ey, ex + hw, ey + 2 * hh + 3), 20, 160, fill=_col(skin * 0.7), width=S)
        d.ellipse(_box(ex - hw, ey - hh, ex + hw, ey + hh), fill=(235, 232, 228, 255))
        gx = ex + a["gaze"]
        d.ellipse(_box(gx - 2.4, ey - 2.4, gx + 2.4, ey + 2.4), fill=_col(p["iris"]))
        d.ellipse(_box(gx - 1.1, ey - 1.1, gx + 1.1, ey + 1.1), fill=(10, 10, 10, 255))
        d.arc(_box(ex - hw, ey - hh, ex + hw, ey + hh), 180, 360, fill=(30, 20, 20, 255),
              width=int(S * (1.6 if a["makeup"] else 1)))
        # eyebrow: a band of thickness `brow`, arched in the middle for Arched_Eyebrows
        bx = np.linspace(p["eye_dx"] - 8, p["eye_dx"] + 9, 9)
        u = (bx - bx[0]) / (bx[-1] - bx[0])
        by = ey - 10 - (3.5 if p["arched"] else 1.2) * np.sin(np.pi * u ** 0.8) + a["brow_raise"]
        thick = p["brow"] * (1 - 0.5 * u)
        d.polygon(_pts(fx + sgn * bx, by - thick) + _pts(fx + sgn * bx[::-1], by[::-1]), fill=_col(brow_rgb))

