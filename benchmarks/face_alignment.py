#!/usr/bin/env python
"""Face detection and alignment on probe photos made from a real face: faces found, false detections, where the
aligned crop puts the eyes, time per photo.

    python benchmarks/face_alignment.py                     # 300 probes, MTCNN and CelebA's rule (predict.py's)
    python benchmarks/face_alignment.py --rule=eyes         # the eyes exactly on the template's (--align=eyes)
    python benchmarks/face_alignment.py --detector=haar     # the fallback without mtcnn

The real face is scikit-image's ``data.astronaut()`` (a 512x512 photo inside its wheel; ``pip install -e .[dev]``).
Its five landmarks are MTCNN's on the untouched photo. Each probe (``celeba_gender.serve.probes``) is that face
framed as CelebA's alignment frames it, scaled 1.2-2.4 times the 218x178 frame, turned up to 15 degrees either way
and pasted at a random place of a 960x720 blurred region of another photo of the wheel (a cat, coffee, a rocket,
galaxies, tissue, a retina, bricks, coins, the moon, a page of text, grass, gravel: no person). The probe knows
where the face's eyes are, so the check never reuses the landmarks that the alignment was computed from: each
found face is aligned from its detected landmarks, and the known eyes are mapped through that alignment.

- found: probes where a detection holds both known eyes in its box; false detections: the other detections;
- eye error vs the template: the larger distance of the two known eyes, in the 218x178 aligned crop, from the
  template's eyes (``faces.CELEBA_TEMPLATE``); with CelebA's rule it includes the 2.2 px that the rule leaves
  between this face's eyes and the template's (the rule fits the mouth too);
- eye error vs the rule: the same distance from where the rule puts the eyes when given the known landmarks: the
  alignment's own error, zero for a perfect detector;
- seconds per photo: detection and alignment, after one untimed warm-up photo.

``--picture=PATH`` also draws one probe with its box and landmarks beside its aligned crop (the README's picture).
Prints a table and writes benchmarks/results/face_alignment*.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
BACKGROUNDS = ("chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina", "brick",
               "coins", "moon", "page", "grass", "gravel")
THRESHOLDS = (0.8, 0.9, 0.95, 0.99)


def source_face():
    """(astronaut photo, its five landmarks by MTCNN)."""
    from skimage import data

    from celeba_gender.serve import faces

    photo = data.astronaut()
    found = faces.MtcnnDetector(min_confidence=0.9)(photo)
    if len(found) != 1:
        raise SystemExit(f"expected one face in data.astronaut(), MTCNN found {len(found)}")
    return photo, np.array(found[0].landmarks)


def backgrounds() -> list[np.ndarray]:
    from skimage import data

    return [getattr(data, name)() for name in BACKGROUNDS]


def haar_matrix(box) -> np.ndarray:
    """photo -> 218x178 frame of the Haar fallback's framing of ``box``."""
    from celeba_gender.serve import faces

    left, top, crop_w, crop_h = faces.crop_window(box, faces.CELEBA_SIZE)
    height, width = faces.CELEBA_SIZE
    return faces.invert(np.array([[crop_w / width, 0, left], [0, crop_h / height, top]]))


def run(num_photos: int, seed: int, detector_name: str, rule: str) -> dict:
    from celeba_gender.serve import faces, probes

    photo, landmarks = source_face()
    # Where the rule puts the eyes when given the known landmarks.
    rule_eyes = faces.apply(faces.alignment_matrix(landmarks, rule), landmarks[:2])
    pool = backgrounds()
    rng = np.random.default_rng(seed)
    detect = (faces.MtcnnDetector(min_confidence=min(THRESHOLDS)) if detector_name == "mtcnn"
              else faces.HaarDetector())
    detect(probes.make_probe(photo, landmarks, probes.blurred_background(pool[0], rng), rng).image)  # warm-up
    rows = []
    for i in range(num_photos):
        background = probes.blurred_background(pool[i % len(pool)], rng)
        probe = probes.make_probe(photo, landmarks, background, rng)
        start = time.perf_counter()
        found = detect(probe.image)
        matrices = [faces.alignment_matrix(f.landmarks, rule) if f.landmarks else haar_matrix(f.box) for f in found]
        for f, m in zip(found, matrices):  # the crops themselves, so that the time includes them
            if f.landmarks:
                faces.warp_to_celeba(probe.image, m)
            else:
                faces.crop_like_celeba(probe.image, f.box, faces.CELEBA_SIZE)
        seconds = time.perf_counter() - start
        eyes = probe.landmarks[:2]
        hits = [k for k, f in enumerate(found) if all(f.box[0] <= x <= f.box[0] + f.box[2] and
                                                       f.box[1] <= y <= f.box[1] + f.box[3] for x, y in eyes)]
        row = {"background": BACKGROUNDS[i % len(pool)], "angle": probe.angle, "scale": probe.scale,
               "seconds": seconds, "confidences": [f.confidence for f in found],
               "face": hits[0] if hits else None, "by_eyes": bool(hits and found[hits[0]].landmarks)}
        if hits:
            landed = faces.apply(matrices[hits[0]], eyes)
            row["eye_error_template"] = float(np.linalg.norm(landed - faces.CELEBA_TEMPLATE[:2], axis=1).max())
            row["eye_error_rule"] = float(np.linalg.norm(landed - rule_eyes, axis=1).max())
        rows.append(row)
    return summarize(rows, detector_name, landmarks, rule_eyes)


def summarize(rows: list[dict], detector_name: str, landmarks: np.ndarray, rule_eyes: np.ndarray) -> dict:
    from celeba_gender.serve import faces

    n = len(rows)
    found = [r for r in rows if r["face"] is not None]

    def at(threshold):
        if detector_name != "mtcnn":
            return {"found": len(found), "false": sum(len(r["confidences"]) - (r["face"] is not None) for r in rows)}
        kept = sum(r["face"] is not None and r["confidences"][r["face"]] >= threshold for r in rows)
        false = sum(c >= threshold for r in rows for k, c in enumerate(r["confidences"]) if k != r["face"])
        return {"found": kept, "false": false}

    template, rule = [r["eye_error_template"] for r in found], [r["eye_error_rule"] for r in found]
    seconds = [r["seconds"] for r in rows]
    return {
        "detector": detector_name, "photos": n,
        "by_threshold": {str(t): at(t) for t in (THRESHOLDS if detector_name == "mtcnn" else (None,))},
        "faces_found_pct": 100 * len(found) / n,
        "aligned_by_landmarks_pct": 100 * sum(r["by_eyes"] for r in found) / max(1, len(found)),
        "eye_error_template_px": {"mean": float(np.mean(template)), "max": float(np.max(template)),
                                  "within_3px_pct": 100 * float(np.mean(np.array(template) <= 3))} if found else None,
        "eye_error_rule_px": {"mean": float(np.mean(rule)), "max": float(np.max(rule)),
                              "within_3px_pct": 100 * float(np.mean(np.array(rule) <= 3))} if found else None,
        "true_face_confidence_min": min((r["confidences"][r["face"]] for r in found), default=None)
        if detector_name == "mtcnn" else None,
        "false_confidence_max": max((c for r in rows for k, c in enumerate(r["confidences"]) if k != r["face"]),
                                    default=None) if detector_name == "mtcnn" else None,
        "seconds_per_photo": {"mean": float(np.mean(seconds)), "median": float(np.median(seconds)),
                              "max": float(np.max(seconds))},
        "source_landmarks": landmarks.tolist(), "rule_eyes": rule_eyes.tolist(),
        "template_eyes": faces.CELEBA_TEMPLATE[:2].tolist(), "rows": rows,
    }


def picture(path: str, seed: int) -> None:
    """One probe photo with MTCNN's box and landmarks, beside its aligned crop with CelebA's template points: what
    predict.py --detect_faces does to a photo (the README's picture)."""
    from PIL import Image, ImageDraw

    from celeba_gender.serve import faces, probes

    photo, landmarks = source_face()
    rng = np.random.default_rng(seed)
    probe = None
    while probe is None or abs(probe.angle) < 10:  # a face turned enough to see the alignment turn it back
        probe = probes.make_probe(photo, landmarks, probes.blurred_background(backgrounds()[1], rng), rng,
                                  scales=(1.4, 1.8))
    face = faces.MtcnnDetector()(probe.image)[0]
    crop = faces.warp_to_celeba(probe.image, faces.alignment_matrix(face.landmarks))
    k = 0.5  # the photo at half size, the crop at twice its size: about the same height
    left = Image.fromarray(probe.image).resize((round(probe.image.shape[1] * k), round(probe.image.shape[0] * k)),
                                               Image.LANCZOS)
    draw = ImageDraw.Draw(left)
    x, y, w, h = (v * k for v in face.box)
    draw.rectangle([x, y, x + w, y + h], outline=(60, 220, 60), width=2)
    for px, py in np.array(face.landmarks) * k:
        draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=(255, 40, 40))
    right = Image.fromarray(crop).resize((356, 436), Image.LANCZOS)
    draw = ImageDraw.Draw(right)
    for px, py in (faces.CELEBA_TEMPLATE + 0.5) * 2 - 0.5:
        draw.line([px - 6, py, px + 6, py], fill=(40, 220, 255), width=2)
        draw.line([px, py - 6, px, py + 6], fill=(40, 220, 255), width=2)
    gap = 12
    out = Image.new("RGB", (left.width + gap + right.width, max(left.height, right.height)), (255, 255, 255))
    out.paste(left, (0, (out.height - left.height) // 2))
    out.paste(right, (left.width + gap, (out.height - right.height) // 2))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    out.quantize(256, dither=Image.Dither.NONE).save(path, optimize=True)
    print(f"wrote {path} (probe turned {probe.angle:.1f} degrees, face {probe.scale:.2f} x 218x178, "
          f"confidence {face.confidence:.4f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num_photos", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--detector", choices=("mtcnn", "haar"), default="mtcnn")
    parser.add_argument("--rule", choices=("celeba", "eyes"), default="celeba", help="alignment rule (faces.RULES)")
    parser.add_argument("--picture", help="also draw one probe, its landmarks and its aligned crop into this PNG")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    info = machine.describe(("numpy", "tensorflow", "keras", "mtcnn", "opencv-python-headless", "scikit-image"))
    result = run(args.num_photos, args.seed, args.detector, args.rule)
    result["rule"] = args.rule
    result["machine"] = info
    print(f"{args.detector} on {result['photos']} probe photos ({machine.one_line(info)})")
    print("| min confidence | faces found | false detections |\n|---|---|---|")
    for threshold, r in result["by_threshold"].items():
        shown = "(none)" if threshold == "None" else threshold
        print(f"| {shown} | {r['found']} ({100 * r['found'] / result['photos']:.1f}%) | {r['false']} |")
    for key, label in (("eye_error_template_px", "eye error vs the template"),
                       ("eye_error_rule_px", "eye error vs the rule")):
        if result[key]:
            print(f"{label}: mean {result[key]['mean']:.2f} px, max {result[key]['max']:.2f} px, within 3 px in "
                  f"{result[key]['within_3px_pct']:.1f}% of the faces found")
    print(f"faces aligned by their landmarks: {result['aligned_by_landmarks_pct']:.1f}% (the others framed by "
          "the Haar box)")
    s = result["seconds_per_photo"]
    print(f"seconds per photo: mean {s['mean']:.3f}, median {s['median']:.3f}, max {s['max']:.3f}")
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    default = (args.detector, args.rule) == ("mtcnn", "celeba")
    path = os.path.join(HERE, "results", "face_alignment.json" if default
                        else f"face_alignment_{args.detector}_{args.rule}.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {path}")
    if args.picture:
        picture(args.picture, args.seed)


if __name__ == "__main__":
    main()
