"""A synthetic CelebA: procedurally drawn faces written in CelebA's exact on-disk layouts.

It stands in for the real dataset in demos and tests.  The Male label is carried by several
noisy cues (hair length, jaw shape, face/neck/shoulder width, brow thickness, facial hair,
lipstick/makeup, earrings, neckties), none decisive alone, so a small CNN has something to
learn and per-subgroup analysis has something to find (short-haired women, long-haired men).

numpy + PIL only (no TensorFlow) to keep import time small.  Every identity and every image
draws from its own numpy Generator seeded by (seed, stream, index), so output bytes depend
only on (num_images, seed, layout), never on `workers`.

    python -m celeba_gender.synthetic --out_dir=/tmp/celeba --num_images=2000 --workers=2
"""

import argparse
import dataclasses
import io
import multiprocessing
import os
import shutil
import sys
import time

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from celeba_gender.attributes import ATTRIBUTE_NAMES, IMAGE_HEIGHT, IMAGE_WIDTH

S = 2  # drawing supersampling factor: shapes are drawn at 2x and reduced, for anti-aliasing
H, W = IMAGE_HEIGHT, IMAGE_WIDTH
MARGIN = 24  # px drawn below the frame
CX, EYE_Y = W / 2, 104.0  # eye line at ~48% height, like CelebA's aligned crops
_PLAN, _IDENTITY, _IMAGE = 0, 1, 2  # RNG stream tags: one Generator per (seed, tag, index)
_YY, _XX = (np.mgrid[0:H, 0:W].astype(np.float32) / np.array([H, W], np.float32)[:, None, None]) - 0.5
_HAIR_RGB = {"black": (28, 22, 20), "brown": (92, 60, 38), "blond": (205, 170, 110),
             "red": (140, 62, 30), "gray": (165, 162, 160)}


@dataclasses.dataclass(frozen=True)
class SyntheticInfo:
    """What `generate` wrote.  Duplicate pairs are (copy image_id, original image_id), e.g.
    ("000120.jpg", "000031.jpg"); the copy always has the later id."""
    out_dir: str
    image_dir: str
    attr_file: str
    partition_file: str
    identity_file: str | None
    num_images: int
    num_identities: int
    male_fraction: float
    exact_duplicates: list
    near_duplicates: list


def _rng(seed, tag, index):
    return np.random.default_rng([seed, tag, index])


def _identity(seed, index):
    """Fixed face parameters of one identity.  Gendered parameters overlap on purpose."""
    r = _rng(seed, _IDENTITY, index)
    # Male by a golden-ratio sequence rather than a coin flip: any run of consecutive identities
    # is ~42% male, so even tiny demo sets have a CelebA-like balance.
    m = bool((index * 0.6180339887498949 + _rng(seed, _PLAN, 1).random()) % 1.0 < 0.42)
    young = bool(r.random() < (0.64 if m else 0.88))
    hair_len = r.choice(["bald", "short", "medium", "long"],
                        p=([0.18, 0.52, 0.22, 0.08] if not young else [0.06, 0.64, 0.22, 0.08])
                        if m else [0.0, 0.12, 0.16, 0.72])
    colour = r.choice(["black", "brown", "blond", "red"],
                      p=[0.44, 0.38, 0.12, 0.06] if m else [0.34, 0.34, 0.24, 0.08])
    if not young and r.random() < 0.25:
        colour = "gray"
    chubby = bool(r.random() < (0.09 if m else 0.04))
    jaw = float(np.clip(r.normal(2.42 if m else 2.0, 0.3), 1.6, 3.4))  # lower-face superellipse
    width = r.normal(45.0 if m else 43.2, 2.0) + 4 * chubby
    brow = float(np.clip(r.normal(3.1 if m else 2.3, 0.6), 1.2, 5.5))  # thickness, px
    beard, stubble_p = "none", 0.0  # facial hair only on some men; stubble varies per image
    if m:
        beard = str(r.choice(["none", "stubble", "mustache", "goatee", "full"], p=[.57, .2, .07, .08, .08]))
        stubble_p = {"none": 0.12, "stubble": 0.85, "mustache": 0.1, "goatee": 0.2, "full": 0.0}[beard]
        beard = "none" if beard == "stubble" else beard
    lip = bool(not m and r.random() < 0.62)
    return dict(
        male=m, young=young, hair_len=str(hair_len), hair=str(colour),
        wavy=float(r.random()), bangs=bool(hair_len != "bald" and r.random() < (0.1 if m else 0.25)),
        receding=bool(m and r.random() < (0.08 if young else 0.4)),
        vol=float(r.uniform(3, 9) if m else r.uniform(6, 15)), side=float(r.uniform(6, 14)),
        skin=float(r.beta(2, 3.5)), pale=bool(r.random() < 0.045),
        width=float(width), jaw=jaw, length=float(r.normal(65.5 if m else 64, 2)),
        neck=float(r.normal(15.5 if m else 14, 1.5)), shoulders=float(r.normal(87 if m else 82, 5)),
        chubby=chubby, double_chin=bool(chubby and r.random() < 0.6 or not young and r.random() < 0.1),
        brow=brow, arched=bool(r.random() < (0.08 if m else 0.45)),
        eye_dx=float(r.normal(19, 1.0)), eye_w=float(r.normal(6.2, 0.4)),
        narrow=bool(r.random() < 0.11), iris=tuple(int(v) for v in r.integers(30, 120, 3)),
        big_nose=bool(r.random() < (0.33 if m else 0.15)), pointy=bool(r.random() < 0.28),
        mouth_w=float(r.normal(14.5 if m else 13.6, 1.2)),
        big_lips=bool(r.random() < (0.14 if m else 0.32)),
        lip_p=0.9 if lip else (0.05 if not m else 0.004),
        lip_rgb=tuple(int(v) for v in r.choice([(190, 30, 50), (200, 70, 110), (150, 40, 70),
                                                (215, 95, 95)])),
        makeup_p=0.75 if lip else 0.02, stubble_p=stubble_p, beard=beard,
        mustache=bool(beard in ("mustache", "full") or beard == "goatee" and r.random() < 0.5),
        sideburns=bool(beard == "full" or m and hair_len == "short" and r.random() < 0.1),
        glasses_p=0.85 if r.random() < (0.1 if m else 0.05) else 0.01,
        earring_p=0.75 if r.random() < (0.04 if m else 0.45) else 0.0,
        ears_hidden=bool(hair_len == "long" and r.random() < 0.5),
        bags=bool(r.random() < (0.5 if not young else 0.12 + 0.08 * m)),
        cheekbones=bool(r.random() < 0.3),
    )


def _skin_rgb(p):
    if p["pale"]:
        return np.array([248.0, 226, 212])
    light, dark = np.array([238.0, 200, 172]), np.array([112.0, 74, 52])
    return light + (dark - light) * p["skin"]


def _pts(xs, ys):
    """Flat scaled point list for ImageDraw from 1x-space coordinate arrays."""
    return [(float(x) * S, float(y) * S) for x, y in zip(xs, ys)]


def _box(x0, y0, x1, y1):
    return [x0 * S, y0 * S, x1 * S, y1 * S]


def _col(rgb, a=255):
    return tuple(min(255, max(0, int(v))) for v in rgb) + (a,)


def _noise(r, shape):
    """Cheap approximately standard-normal float32 noise (sum of two uniform bytes, a triangular
    distribution): ~10x faster than Generator.standard_normal, which dominated render time."""
    n = int(np.prod(shape))
    b = np.frombuffer(r.bytes(2 * n), np.int8).astype(np.float32).reshape(2, *shape)
    return (b[0] + b[1]) * np.float32(1 / 104.5)


def _texture(r, rgb, streak, grain=0.06):
    """Full-canvas RGB texture: `rgb` modulated by vertical streaks (hair) plus fine grain.

    Made at 1x and upscaled: the canvas is reduced to 1x later anyway, and it is 4x cheaper."""
    h = H + MARGIN
    small = r.standard_normal((6, 60)).astype(np.float32)
    low = np.asarray(Image.fromarray(small).resize((W, h), Image.BICUBIC))
    f = 1 + streak * low + grain * _noise(r, (h, W))
    x = np.full((h, W, 4), 255, np.uint8)  # RGBA, so pasting into the RGBA layer needs no convert
    x[..., :3] = np.clip(np.asarray(rgb, np.float32) * f[..., None], 0, 255)
    return Image.fromarray(x).resize((W * S, h * S), Image.NEAREST)


def _paste(layer, src, draw_fn):
    """Blend `src` (a layer-sized image, or an RGB colour) into `layer` through a mask drawn by
    draw_fn(mask ImageDraw); mask values < 255 are translucent.  This is the only way to draw
    translucently here: ImageDraw does not blend into RGBA images, it would punch holes."""
    mask = Image.new("L", layer.size, 0)
    draw_fn(ImageDraw.Draw(mask))
    box = mask.getbbox()  # paste only the drawn region: whole-canvas pastes were a hot spot
    if box:
        layer.paste(src.crop(box) if isinstance(src, Image.Image) else _col(src), box, mask.crop(box))


def _face_outline(p, cy, fx):
    """Superellipse face: round top, lower-half exponent `jaw` (2 = oval, >2.5 = square jaw)."""
    t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    n = np.where(s > 0, p["jaw"], 2.2)
    b = np.where(s > 0, p["length"], 58.0)
    xs = fx + p["width"] * np.sign(c) * np.abs(c) ** (2 / n)
    ys = cy + b * np.sign(s) * np.abs(s) ** (2 / n)
    return xs, ys


def _hair_arc(p, cy, extra_w, y_max):
    """Outer head-hair arc from the left side over the top to the right side (y <= y_max)."""
    t = np.linspace(np.pi, 2 * np.pi, 40)
    xs = CX + (p["width"] + extra_w) * np.cos(t)
    ys = cy + (58 + p["vol"]) * np.sin(t)
    keep = ys <= y_max
    return xs[keep], ys[keep]


def _draw_person(p, a, r, skin, hair_tex):
    """Draw one person onto a transparent 2x RGBA layer (before global pose and lighting)."""
    # Extra rows below the frame so that rotated/shifted poses never reveal a cut-off torso.
    layer = Image.new("RGBA", (W * S, (H + MARGIN) * S), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer, "RGBA")
    cy, fx, ey = EYE_Y + 8, CX + a["yaw"] * 5, EYE_Y  # face centre; features shift with yaw
    _draw_body(layer, d, p, a, r, skin, hair_tex, cy, ey)
    _draw_face(layer, d, p, a, r, skin, hair_tex, cy, fx, ey)
    _draw_eyes(layer, d, p, a, skin, fx, ey)
    if p["hair_len"] != "bald":
        _draw_fringe(layer, p, hair_tex, cy, ey)
        if p["sideburns"]:
            centres = [CX + k * (p["width"] - 0.5) for k in (-1, 1)]  # 5 px wide, over the face edge
            _paste(layer, hair_tex, lambda m: [m.rectangle(_box(c - 2.5, ey - 12, c + 2.5, ey + 16), fill=255)
                                               for c in centres])
    _draw_accessories(layer, d, p, a, cy, fx, ey)
    return layer


def _draw_body(layer, d, p, a, r, skin, hair_tex, cy, ey):
    """Back hair, shirt (and tie or necklace), neck, long locks over the shoulders, ears, earrings."""
    wob = lambda ys: p["wavy"] * 3 * np.sin(ys / 6 + p["skin"] * 9)  # wavy hair edges
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


def _draw_face(layer, d, p, a, r, skin, hair_tex, cy, fx, ey):
    """Face outline with shading, stubble or beard, blush, nose, mouth, goatee and moustache."""
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
        tex = hair_tex if p["beard"] == "full" else _texture(r, skin * 0.5, 0.0, grain=0.4)
        alpha = 255 if p["beard"] == "full" else int(r.uniform(110, 170))
        _paste(layer, tex, lambda m: m.polygon(beard, fill=alpha))
    if a["blush"]:
        _paste(layer, (225, 90, 100), lambda m: [
            m.ellipse(_box(fx + k * 22 - 8, ey + 16, fx + k * 22 + 8, ey + 28), fill=60) for k in (-1, 1)])
    nw, ny = 7.5 + 3 * p["big_nose"], ey + 23

    def shading(m):  # nose bridge, and cheekbone shadows for High_Cheekbones
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
                  fill=_col(_HAIR_RGB[p["hair"]]))


def _draw_accessories(layer, d, p, a, cy, fx, ey):
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


def _draw_fringe(layer, p, hair_tex, cy, ey):
    """Hair over the top of the head down to the hairline (bangs low, receding high)."""
    ax, ay = _hair_arc(p, cy, 3 if p["hair_len"] in ("short", "bald") else 6, ey - 4)
    y_hl = ey - (14 if p["bangs"] else 42 if p["receding"] else 30)
    hx = np.linspace(CX + p["width"], CX - p["width"], 25)
    u = np.abs(hx - CX) / p["width"]
    hy = y_hl + (ey - 6 - y_hl) * u ** (6 if p["bangs"] else 2)
    if p["bangs"]:
        hy = hy + 2.5 * (np.arange(25) % 2)  # ragged fringe edge
    _paste(layer, hair_tex, lambda m: m.polygon(_pts(ax, ay) + _pts(hx, hy), fill=255))


def _draw_mouth(d, p, a, skin, fx, my):
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


def _draw_eyes(layer, d, p, a, skin, fx, ey):
    """Eyes (white, iris, pupil, lid), makeup, under-eye bags and eyebrows."""
    hw, hh = p["eye_w"], 1.8 if p["narrow"] else 2.8
    brow_rgb = np.array(_HAIR_RGB[p["hair"]]) * (0.6 if p["hair"] in ("blond", "gray") else 0.8)
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


def _background(r):
    """Out-of-focus backdrop: muted base colour plus a few large blurry blobs."""
    base = r.uniform(35, 225) + r.normal(0, 25, 3)
    # smooth field: mostly brightness variation plus a little colour, like a defocused room
    grid = base + (r.normal(0, 30, (5, 4, 1)) + r.normal(0, 10, (5, 4, 3))) * r.uniform(0.3, 1.2)
    small = Image.fromarray(np.clip(grid, 0, 255).astype(np.uint8))
    return small.resize((W, H), Image.BICUBIC).convert("RGBA")


def _image_attributes(p, r):
    """Per-image appearance choices and the 40 CelebA attribute values they imply."""
    m = p["male"]
    smiling = bool(r.random() < 0.48)
    a = dict(smile=r.uniform(0.55, 1) if smiling else r.uniform(0, 0.25),
             yaw=r.normal(0, 0.4), gaze=r.normal(0, 0.6), brow_raise=r.normal(0, 0.8),
             shirt=r.uniform(20, 230, 3), tie=r.uniform(20, 200, 3), hat_rgb=r.uniform(20, 220, 3),
             shadow_rgb=r.choice([(120, 80, 140), (140, 100, 80), (90, 110, 160)]),
             earring_rgb=r.choice([(225, 195, 90), (210, 210, 215)]), lip_rgb=np.array(p["lip_rgb"]),
             glasses=bool(r.random() < p["glasses_p"]), hat=bool(r.random() < 0.05),
             earrings=bool(r.random() < p["earring_p"]),
             necklace=bool(r.random() < (0.03 if m else 0.18)),
             necktie=bool(r.random() < (0.16 if m else 0.005)),
             lipstick=bool(r.random() < p["lip_p"]), stubble=bool(r.random() < p["stubble_p"]),
             blurry=bool(r.random() < 0.05))
    a["open"] = r.uniform(2, 6) if r.random() < (0.6 if smiling else 0.3) else 0.0
    a["sun"] = a["glasses"] and r.random() < 0.15
    a["makeup"] = a["lipstick"] and r.random() < p["makeup_p"]
    a["blush"] = a["makeup"] and r.random() < 0.3 or r.random() < 0.02
    a["cheekbones"] = p["cheekbones"] or smiling and r.random() < 0.6
    hl, hair = p["hair_len"], p["hair"]
    v = dict(
        Arched_Eyebrows=p["arched"],
        Attractive=r.random() < 0.15 + 0.35 * p["young"] + 0.2 * a["makeup"] - 0.1 * p["chubby"],
        Bags_Under_Eyes=p["bags"], Bald=hl == "bald", Bangs=p["bangs"], Big_Lips=p["big_lips"],
        Big_Nose=p["big_nose"], Black_Hair=hair == "black" and hl != "bald",
        Blond_Hair=hair == "blond" and hl != "bald", Blurry=a["blurry"],
        Brown_Hair=hair == "brown" and hl != "bald", Bushy_Eyebrows=p["brow"] > 3.6,
        Chubby=p["chubby"], Double_Chin=p["double_chin"], Eyeglasses=a["glasses"],
        Goatee=p["beard"] == "goatee", Gray_Hair=hair == "gray" and hl != "bald",
        Heavy_Makeup=a["makeup"], High_Cheekbones=a["cheekbones"], Male=m,
        Mouth_Slightly_Open=a["open"] > 0, Mustache=p["mustache"], Narrow_Eyes=p["narrow"],
        No_Beard=p["beard"] == "none", Oval_Face=abs(p["jaw"] - 2.1) < 0.2 and not p["chubby"],
        Pale_Skin=p["pale"], Pointy_Nose=p["pointy"], Receding_Hairline=p["receding"],
        Rosy_Cheeks=a["blush"], Sideburns=p["sideburns"] and hl != "bald", Smiling=smiling,
        Straight_Hair=hl in ("medium", "long") and p["wavy"] < 0.3,
        Wavy_Hair=hl in ("medium", "long") and p["wavy"] > 0.6, Wearing_Earrings=a["earrings"],
        Wearing_Hat=a["hat"], Wearing_Lipstick=a["lipstick"], Wearing_Necklace=a["necklace"],
        Wearing_Necktie=a["necktie"], Young=p["young"])
    v["5_o_Clock_Shadow"] = a["stubble"]  # not a valid keyword name
    values = np.array([1 if v[n] else -1 for n in ATTRIBUTE_NAMES], np.int8)
    return a, values


def render(seed, image_number, identity_index):
    """Draw one image; returns (JPEG bytes, 40 attribute values in {-1, 1})."""
    p = _identity(seed, identity_index)
    r = _rng(seed, _IMAGE, image_number)
    a, values = _image_attributes(p, r)
    skin = _skin_rgb(p) * r.normal(1, 0.03)
    hair_tex = _texture(r, np.array(_HAIR_RGB[p["hair"]]) * r.normal(1, 0.05), 0.35)
    layer = _draw_person(p, a, r, skin, hair_tex)
    # Pose: small rotation / scale / shift about the eye centre, like residual alignment error.
    # Premultiplied alpha (RGBa) so that reducing and resampling do not darken edges.
    ang, sc = np.deg2rad(r.normal(0, 4)), r.normal(1, 0.04)
    dx, dy = r.normal(0, 2.5, 2)
    c, s, ox, oy = np.cos(ang) / sc, np.sin(ang) / sc, CX, EYE_Y
    affine = (c, s, ox - c * (ox + dx) - s * (oy + dy), -s, c, oy + s * (ox + dx) - c * (oy + dy))
    layer = layer.convert("RGBa").reduce(S).transform((W, H), Image.AFFINE, affine, Image.BILINEAR)
    img = Image.alpha_composite(_background(r), layer.convert("RGBA")).convert("RGB")
    if a["blurry"]:
        img = img.filter(ImageFilter.GaussianBlur(r.uniform(1.2, 2.2)))
    # Lighting (brightness, contrast, colour cast, directional gradient) and sensor noise.
    # In-place float32 ops: this is a large share of the per-image time.
    x = np.array(img, np.float32)
    phi, g = r.uniform(0, 2 * np.pi), r.uniform(0, 0.35)
    grad = 1 + g * (_XX * np.float32(np.cos(phi)) + _YY * np.float32(np.sin(phi)))
    contrast, gain = r.normal(1, 0.1), r.normal(1, 0.08) * r.normal(1, 0.03, 3)  # + colour cast
    mean = x.mean()  # contrast pivots about the mean: ((x - mean) * contrast + mean) * gain
    x *= (contrast * gain).astype(np.float32)
    x += (mean * (1 - contrast) * gain).astype(np.float32)
    x *= grad[..., None]
    noise = _noise(r, x.shape)
    noise *= np.float32(r.uniform(2, 5))
    x += noise
    np.clip(x, 0, 255, out=x)
    buf = io.BytesIO()
    Image.fromarray(x.astype(np.uint8)).save(buf, "JPEG", quality=int(r.integers(85, 96)))
    return buf.getvalue(), values


def _plan(num_images, seed, images_per_identity):
    """Decide identities, partitions, id order and planted duplicates (cheap; main process).

    Returns (identity_index per image, split per image, CelebA identity number per identity index,
    exact pairs, near pairs) with pairs as 0-based (copy position, original position).
    """
    r = _rng(seed, _PLAN, 0)
    n_exact = max(int(num_images >= 50), round(num_images * 0.001))
    n_near = max(int(num_images >= 100), round(num_images * 0.0005))
    n_render = num_images - n_exact - n_near
    lo, hi = images_per_identity
    counts = []
    while sum(counts) < n_render:
        counts.append(int(r.integers(lo, hi + 1)))
    counts[-1] -= sum(counts) - n_render
    n_id = len(counts)
    # Identity-disjoint ~80/10/10 split by images, like CelebA's official partition.
    order = r.permutation(n_id)
    split_of = np.zeros(n_id, np.int64)
    start = 0
    for i in order:
        mid = (start + counts[i] / 2) / n_render
        split_of[i] = 0 if mid < 0.8 else 1 if mid < 0.9 else 2
        start += counts[i]
    if n_id >= 3 and len(set(split_of.tolist())) < 3:  # tiny sets: keep every split non-empty
        split_of[order[-2]], split_of[order[-1]] = 1, 2
    ident = np.repeat(np.arange(n_id), counts)
    originals = r.choice(n_render, n_exact + n_near, replace=False)
    ident = np.concatenate([ident, ident[originals]])  # duplicates take the original's identity
    # CelebA ids are grouped by partition (train, then validation, then test), shuffled within.
    pos = np.concatenate([r.permutation(np.flatnonzero(split_of[ident] == k)) for k in range(3)])
    where = np.empty(num_images, np.int64)
    where[pos] = np.arange(num_images)  # final position of each planned item
    pairs = []
    for j, o in enumerate(originals):
        copy, orig = where[n_render + j], where[o]
        pairs.append((max(copy, orig), min(copy, orig)))  # swap so the copy gets the later id
    ident_at = ident[pos]
    number = r.choice(np.arange(1, max(10177, 2 * n_id) + 1), n_id, replace=False)
    return ident_at, split_of[ident_at], number, pairs[:n_exact], pairs[n_exact:]


def _context():
    """fork where safe (fast, works from unguarded scripts); spawn once TensorFlow is loaded,
    because forking a process that runs TensorFlow's thread pools can deadlock the children."""
    if "fork" in multiprocessing.get_all_start_methods() and "tensorflow" not in sys.modules:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _render_task(task):
    seed, image_number, identity_index, path = task
    data, values = render(seed, image_number, identity_index)
    with open(path, "wb") as f:
        f.write(data)
    return values


def _near_copy(src, dst, seed, image_number):
    """Re-encode `src` at another JPEG quality with a tiny brightness change."""
    r = _rng(seed, 3, image_number)
    x = np.asarray(Image.open(src).convert("RGB"), np.float32) * r.uniform(0.985, 1.015)
    Image.fromarray(np.clip(x, 0, 255).astype(np.uint8)).save(dst, "JPEG", quality=int(r.integers(70, 84)))


def _write_annotations(out_dir, layout, names, values, splits, identities):
    """Write CelebA's annotation files in the chosen layout; returns (attr, partition, identity) paths."""
    if layout == "kaggle":
        # Kaggle ships no identity file, so none is written.
        attr, part = os.path.join(out_dir, "list_attr_celeba.csv"), os.path.join(out_dir, "list_eval_partition.csv")
        with open(attr, "w") as f:
            f.write(",".join(("image_id",) + ATTRIBUTE_NAMES) + "\n")
            f.writelines(n + "," + ",".join(str(int(v)) for v in row) + "\n" for n, row in zip(names, values))
        with open(part, "w") as f:
            f.write("image_id,partition\n")
            f.writelines(f"{n},{s}\n" for n, s in zip(names, splits))
        return attr, part, None
    attr, part, ident = (os.path.join(out_dir, f) for f in
                         ("list_attr_celeba.txt", "list_eval_partition.txt", "identity_CelebA.txt"))
    with open(attr, "w") as f:
        # Real CelebA: count line, names line with a trailing space, then width-2 value fields.
        f.write(f"{len(names)}\n" + " ".join(ATTRIBUTE_NAMES) + " \n")
        f.writelines(n + " " + " ".join(f"{int(v):2d}" for v in row) + "\n" for n, row in zip(names, values))
    with open(part, "w") as f:
        f.writelines(f"{n} {s}\n" for n, s in zip(names, splits))
    with open(ident, "w") as f:
        f.writelines(f"{n} {i}\n" for n, i in zip(names, identities))
    return attr, part, ident


def generate(out_dir, num_images, seed=0, layout="original", workers=1, images_per_identity=(3, 12)):
    """Write a synthetic CelebA of `num_images` images to `out_dir` and describe it.

    layout="original" mirrors the Google Drive release (img_align_celeba/, *.txt incl.
    identity_CelebA.txt); layout="kaggle" mirrors Kaggle's (img_align_celeba/img_align_celeba/,
    *.csv, no identity file).  Output bytes depend only on (num_images, seed, layout,
    images_per_identity), not on `workers` (1 = in-process, K > 1 = K worker processes).
    Files of the same names are overwritten; an image folder holding other .jpg files (an
    earlier, larger dataset) is refused.  Workers are forked, or spawned once TensorFlow is
    imported; spawning needs the caller's script to be guarded by `if __name__ == "__main__":`.
    """
    if layout not in ("original", "kaggle"):
        raise ValueError(f"layout must be 'original' or 'kaggle', got {layout!r}")
    if num_images < 1 or workers < 1 or not 1 <= images_per_identity[0] <= images_per_identity[1]:
        raise ValueError("need num_images >= 1, workers >= 1 and 1 <= images_per_identity[0] <= [1]")
    out_dir = os.path.abspath(out_dir)
    image_dir = os.path.join(out_dir, "img_align_celeba", *(["img_align_celeba"] if layout == "kaggle" else []))
    names = [f"{i + 1:06d}.jpg" for i in range(num_images)]
    os.makedirs(image_dir, exist_ok=True)
    stale = {f for f in os.listdir(image_dir) if f.endswith(".jpg")} - set(names)
    if stale:  # mixing two datasets in one folder would silently corrupt both
        raise FileExistsError(f"{image_dir} holds {len(stale)} images of another dataset; use a new out_dir")
    ident, splits, number, exact, near = _plan(num_images, seed, images_per_identity)
    paths = [os.path.join(image_dir, n) for n in names]
    copies = {c for c, _ in exact + near}
    tasks = [(seed, i + 1, int(ident[i]), paths[i]) for i in range(num_images) if i not in copies]
    if workers == 1:
        rendered = [_render_task(t) for t in tasks]
    else:
        with _context().Pool(workers) as pool:
            rendered = pool.map(_render_task, tasks, chunksize=max(1, min(64, len(tasks) // (8 * workers))))
    values = np.zeros((num_images, len(ATTRIBUTE_NAMES)), np.int8)
    values[[t[1] - 1 for t in tasks]] = rendered
    for c, o in exact + near:
        values[c] = values[o]
        if (c, o) in exact:
            shutil.copyfile(paths[o], paths[c])
        else:
            _near_copy(paths[o], paths[c], seed, c + 1)
    attr, part, ident_file = _write_annotations(out_dir, layout, names, values, splits, number[ident])
    return SyntheticInfo(
        out_dir=out_dir, image_dir=image_dir, attr_file=attr, partition_file=part, identity_file=ident_file,
        num_images=num_images, num_identities=len(set(ident.tolist())),
        male_fraction=float((values[:, ATTRIBUTE_NAMES.index("Male")] == 1).mean()),
        exact_duplicates=[(names[c], names[o]) for c, o in exact],
        near_duplicates=[(names[c], names[o]) for c, o in near])


def _disk_mb(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs) / 1e6


def main(argv=None):
    """CLI: python -m celeba_gender.synthetic --out_dir=DIR --num_images=N [--seed --layout --workers]."""
    ap = argparse.ArgumentParser(prog="python -m celeba_gender.synthetic", description=__doc__.split("\n")[0])
    ap.add_argument("--out_dir", required=True, help="folder to write the dataset into")
    ap.add_argument("--num_images", type=int, required=True, help="number of images (CelebA: 202599)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layout", choices=("original", "kaggle"), default="original",
                    help="original = Google Drive release (.txt); kaggle = Kaggle release (.csv)")
    ap.add_argument("--workers", type=int, default=1, help="processes drawing images")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    info = generate(args.out_dir, args.num_images, args.seed, args.layout, args.workers)
    secs = time.perf_counter() - t0
    print(f"wrote {info.num_images} images of {info.num_identities} identities "
          f"(Male fraction {info.male_fraction:.3f}; planted {len(info.exact_duplicates)} exact and "
          f"{len(info.near_duplicates)} near duplicates) to {info.out_dir} "
          f"[{args.layout} layout, {_disk_mb(info.out_dir):.1f} MB] in {secs:.1f} s")
    # Returns None: the `celeba-synthetic` console script passes the return value to sys.exit.


if __name__ == "__main__":
    main()
