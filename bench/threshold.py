"""How far one global cosine threshold gets at telling copies from other products (Luma).

History: price comparison used to decide "same item" with this threshold alone. It now only
pre-selects candidates, and search/verify.py decides with local features and colour (see
docs/matching.md, bench/calibrate_same_item.py). This script stays as the baseline.

Another shop listing the same product usually shows the same studio photo, re-encoded,
resized, cropped or padded. Positives: each main photo against such a copy of itself.
Negatives: each main photo against the most similar main photo of another *model* (another
group_id). Other colours of the same model are reported too: ImageNet features alone are nearly
colour-blind and score them like copies; the colour part of the default embedding (see
embedding/colour.py) is what pulls them apart. ``--colour-weight 0`` measures the CNN alone.
Prints the distributions and the threshold that keeps false matches across models under 1%.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from embedding.decode import load_image  # noqa: E402
from embedding.embedder import create_embedder  # noqa: E402
from lookalike.settings import ImageSettings, ModelSettings  # noqa: E402

LUMA = REPO.parent / "shared" / "data" / "luma"


def copies(img: Image.Image) -> list[Image.Image]:
    w, h = img.size
    buf = io.BytesIO()
    img.resize((int(w * 0.6), int(h * 0.6))).save(buf, "JPEG", quality=55)
    recoded = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    cropped = img.crop((int(w * 0.08), int(h * 0.08), int(w * 0.92), int(h * 0.92)))
    padded = ImageOps.expand(img, border=int(max(w, h) * 0.12), fill="white")
    brighter = ImageEnhance.Brightness(ImageEnhance.Contrast(img).enhance(1.1)).enhance(1.08)
    return [recoded, cropped, padded, brighter]


def main() -> int:
    if not (LUMA / "catalog.jsonl").exists():
        print("threshold: ../shared/data/luma not found; skipped")
        return 0
    rows = [json.loads(x) for x in (LUMA / "catalog.jsonl").read_text().splitlines()]
    mains = [(r["product_id"], LUMA / next(i["path"] for i in r["images"] if i["view"] == "main"))
             for r in rows]
    groups = np.array([r["group_id"] for r in rows])
    args = sys.argv[1:]
    model = ModelSettings()  # the defaults, unless --colour-weight
    weight = (float(args[args.index("--colour-weight") + 1]) if "--colour-weight" in args
              else model.colour_weight)
    embedder = create_embedder(model.variant, model.square, model.batch_size, weight)
    print(f"model {embedder.model_version}")
    images = [load_image(p, ImageSettings().max_pixels) for _, p in mains]
    base = embedder.embed(images)
    pos = []
    for i, img in enumerate(images):
        aug = embedder.embed(copies(img))
        pos.extend((aug @ base[i]).tolist())
    sims = base @ base.T
    np.fill_diagonal(sims, -1)
    same_group = groups[:, None] == groups[None, :]
    neg_a = np.where(same_group, -1, sims).max(axis=1)
    colour = np.where(same_group, sims, -1).max(axis=1)
    colour = colour[colour > -1]
    pos_a = np.array(pos)
    for name, arr in (("same photo, edited copy", pos_a), ("nearest other model", neg_a),
                      ("other colour, same model", colour)):
        q = np.percentile(arr, [1, 5, 50, 95, 99])
        print(f"{name:>26}: n={len(arr)} p1={q[0]:.3f} p5={q[1]:.3f} p50={q[2]:.3f} "
              f"p95={q[3]:.3f} p99={q[4]:.3f}")
    threshold = float(np.ceil(np.percentile(neg_a, 99) * 100) / 100)
    print(f"threshold (99% of nearest other models below it): {threshold:.2f}; "
          f"copies kept above it: {np.mean(pos_a >= threshold):.1%}")
    for t in (0.80, 0.85, 0.88, 0.90, 0.92, 0.95):
        print(f"  at {t:.2f}: copies found {np.mean(pos_a >= t):.1%}, "
              f"other models wrongly matched {np.mean(neg_a >= t):.1%}, "
              f"other colours matched {np.mean(colour >= t):.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
