"""The synthetic faces: who each identity is, what each image shows, and how it is rendered.

The Male label is carried by several noisy cues (hair length, jaw shape, face/neck/shoulder width, brow
thickness, facial hair, lipstick/makeup, earrings, neckties), none decisive alone, so a small CNN has
something to learn and per-subgroup analysis has something to find (short-haired women, long-haired men).

Every identity and every image draws from its own numpy Generator seeded by (seed, stream, index), so an
image depends only on (seed, image number, identity index): never on which process draws it, or in which
order.  numpy + PIL only (no TensorFlow), to keep worker start-up cheap.
"""

from __future__ import annotations

import io

import numpy as np
from numpy.random import Generator
from PIL import Image, ImageFilter

from celeba_gender.shards.attributes import ATTRIBUTE_NAMES
from celeba_gender.synthetic.drawing import (CX, EYE_Y, HAIR_RGB, H, S, W, Appearance, Identity, draw_person,
                                             noise, texture)

# Random streams: one Generator per (seed, stream, index).  PLAN_STREAM is the planner's (index 0) and the
# sex sequence's offset (index 1); NEAR_COPY_STREAM re-encodes planted near-duplicates.
PLAN_STREAM, IDENTITY_STREAM, IMAGE_STREAM, NEAR_COPY_STREAM = 0, 1, 2, 3
# Pixel coordinates in [-0.5, 0.5) for the lighting gradient, made once per process.
_YY, _XX = (np.mgrid[0:H, 0:W].astype(np.float32) / np.array([H, W], np.float32)[:, None, None]) - 0.5


def rng(seed: int, stream: int, index: int) -> Generator:
    """The Generator of item ``index`` of ``stream``; independent of every other (stream, index)."""
    return np.random.default_rng([seed, stream, index])


def identity_parameters(seed: int, index: int) -> Identity:
    """Fixed face parameters of one identity.  Gendered parameters overlap on purpose."""
    r = rng(seed, IDENTITY_STREAM, index)
    # Male by a golden-ratio sequence rather than a coin flip: any run of consecutive identities
    # is ~42% male, so even tiny demo sets have a CelebA-like balance.
    m = bool((index * 0.6180339887498949 + rng(seed, PLAN_STREAM, 1).random()) % 1.0 < 0.42)
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


def _skin_rgb(p: Identity) -> np.ndarray:
    """The identity's base skin colour (before the per-image exposure change)."""
    if p["pale"]:
        return np.array([248.0, 226, 212])
    light, dark = np.array([238.0, 200, 172]), np.array([112.0, 74, 52])
    return light + (dark - light) * p["skin"]


def _background(r: Generator) -> Image.Image:
    """Out-of-focus backdrop: muted base colour plus a few large blurry blobs."""
    base = r.uniform(35, 225) + r.normal(0, 25, 3)
    # smooth field: mostly brightness variation plus a little colour, like a defocused room
    grid = base + (r.normal(0, 30, (5, 4, 1)) + r.normal(0, 10, (5, 4, 3))) * r.uniform(0.3, 1.2)
    small = Image.fromarray(np.clip(grid, 0, 255).astype(np.uint8))
    return small.resize((W, H), Image.BICUBIC).convert("RGBA")


def _image_attributes(p: Identity, r: Generator) -> tuple[Appearance, np.ndarray]:
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


def render(seed: int, image_number: int, identity_index: int) -> tuple[bytes, np.ndarray]:
    """Draws image number ``image_number`` (1-based) of identity ``identity_index``.

    Returns (JPEG bytes, the 40 attribute values in {-1, 1} as int8, in ATTRIBUTE_NAMES order).  The result
    depends only on the three arguments: each image draws from its own Generator.
    """
    p = identity_parameters(seed, identity_index)
    r = rng(seed, IMAGE_STREAM, image_number)
    a, values = _image_attributes(p, r)
    skin = _skin_rgb(p) * r.normal(1, 0.03)
    hair_tex = texture(r, np.array(HAIR_RGB[p["hair"]]) * r.normal(1, 0.05), 0.35)
    layer = draw_person(p, a, r, skin, hair_tex)
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
    grain = noise(r, x.shape)
    grain *= np.float32(r.uniform(2, 5))
    x += grain
    np.clip(x, 0, 255, out=x)
    buf = io.BytesIO()
    Image.fromarray(x.astype(np.uint8)).save(buf, "JPEG", quality=int(r.integers(85, 96)))
    return buf.getvalue(), values
