"""Compare training settings on held-out protocols without re-running the frozen network.

``lookalike train`` measures each run on its own validation split; choosing its defaults needs
the held-out protocols (``bench/train_split.py``) and several settings. This script caches the
training views once (:func:`training.trainer.prepare`) and the frozen bottom's output for every
protocol image once, then for each setting fits the top again from its ImageNet weights and
scores the protocols with exact cosine in numpy (one hit per product, as ``lookalike eval``;
``exact`` = CNN + colour 0.5, ``similar`` = the CNN part alone, as a query with its colour
block zeroed ranks).

    PYTHONPATH=. python bench/train_sweep.py --catalog var/train-split/train-gallery.jsonl \\
        --protocol var/train-split/views --protocol var/train-split/snapshots \\
        [--group-key group_id] [--train-blocks 1] [--epochs 8]
"""

from __future__ import annotations

import argparse
import dataclasses
import pickle
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from embedding.colour import colour_descriptors  # noqa: E402
from embedding.decode import load_image  # noqa: E402
from embedding.embedder import l2_normalise, mix_colour  # noqa: E402
from embedding.preprocess import preprocess_image  # noqa: E402
from evaluation.metrics import recall_at_k  # noqa: E402
from evaluation.protocol import load_gallery, load_queries  # noqa: E402
from training.backbone import Backbone, EfficientNetBackbone, ProjectionBackbone  # noqa: E402
from training.trainer import TrainOptions, fit, prepare  # noqa: E402
from training.validate import rank_products  # noqa: E402


class Protocol:
    """A protocol's images through the frozen bottom, once."""

    def __init__(self, folder: Path, backbone: Backbone) -> None:
        self.name = folder.name
        products = load_gallery(folder / "gallery.jsonl")
        queries = load_queries(folder / "queries.jsonl", products)
        self.gallery = [(p.product_id, path) for p in products for path in p.images]
        self.relevant = [set(q.relevant) for q in queries]
        paths = [path for _, path in self.gallery] + [q.image for q in queries]
        squares = np.stack([preprocess_image(load_image(p, 40_000_000), 224) for p in paths])
        self.maps = backbone.features(squares)
        self.colour = colour_descriptors(squares)
        self.n_gallery = len(self.gallery)

    def score(self, top: object) -> dict[str, tuple[float, float]]:
        cnn = np.concatenate([np.asarray(top.predict_on_batch(  # type: ignore[attr-defined]
            self.maps[i : i + 64].astype(np.float32))) for i in range(0, len(self.maps), 64)])
        out = {}
        for intent, vectors in (("exact", mix_colour(cnn, self.colour, 0.5)),
                                ("similar", l2_normalise(cnn))):
            g, q = vectors[: self.n_gallery], vectors[self.n_gallery :]
            sims = q @ g.T
            pids = [pid for pid, _ in self.gallery]
            ranked = [rank_products(sims[i], pids) for i in range(len(q))]
            out[intent] = tuple(float(np.mean([recall_at_k(r, rel, k) for r, rel in
                                               zip(ranked, self.relevant, strict=True)]))
                                for k in (1, 10))
        return out  # type: ignore[return-value]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--catalog", type=Path, required=True)
    p.add_argument("--protocol", type=Path, action="append", required=True)
    p.add_argument("--group-key")
    p.add_argument("--tune", choices=["projection", "blocks"], default="projection")
    p.add_argument("--train-blocks", type=int, default=1)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--views", type=int, default=4)
    p.add_argument("--cache", type=Path,
                   help="pickle of the prepared views and protocol features: read when it "
                        "exists, else written (scratch, under var/; same arguments only)")
    p.add_argument("--settings", default="triplet:1e-4,triplet:3e-4,proxy:1e-4,proxy:3e-4",
                   help="comma-separated loss:learning_rate[:nomix][:FIELD=VALUE...] (nomix: "
                        "the product loss on the CNN part alone, not on CNN + colour; FIELD: "
                        "a numeric TrainOptions field, e.g. epochs=30, weight_decay=1e-4)")
    args = p.parse_args()
    backbone: Backbone = (ProjectionBackbone("lite0", "pad") if args.tune == "projection"
                          else EfficientNetBackbone("lite0", "pad", args.train_blocks))
    base = TrainOptions(group_key=args.group_key, epochs=args.epochs, views=args.views,
                        keep_best=False)
    if args.cache and args.cache.exists():
        with open(args.cache, "rb") as fh:
            prepared, protocols = pickle.load(fh)
        prepared.initial = backbone.top().get_weights()  # the head may have changed since
    else:
        prepared = prepare(args.catalog, backbone, base)
        protocols = [Protocol(folder, backbone) for folder in args.protocol]
        if args.cache:
            with open(args.cache, "wb") as fh:
                pickle.dump((prepared, protocols), fh)

    def row(name: str) -> None:
        cells = []
        for protocol in protocols:
            s = protocol.score(backbone.top())
            cells.append(f"{protocol.name} exact {s['exact'][0]:.3f}/{s['exact'][1]:.3f} "
                         f"similar {s['similar'][0]:.3f}/{s['similar'][1]:.3f}")
        print(f"{name:<34} " + " | ".join(cells), flush=True)

    backbone.top().set_weights(prepared.initial)
    row("untrained")
    for setting in args.settings.split(","):
        loss, lr, *rest = setting.split(":")
        fields = dict(item.split("=", 1) for item in rest if "=" in item)
        types = {f.name: f.type for f in dataclasses.fields(TrainOptions)}
        values = {k: (int(v) if "int" in str(types[k]) else float(v)) for k, v in fields.items()}
        options = dataclasses.replace(base, loss=loss, learning_rate=float(lr),  # type: ignore[arg-type]
                                      colour_in_loss="nomix" not in rest, **values)
        result = fit(prepared, backbone, options)
        row(f"{setting} (val best {result.best_epoch})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
