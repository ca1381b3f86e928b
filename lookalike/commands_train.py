"""``lookalike train``: fine-tune the embedding model on a catalog (docs/training.md)."""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import glob
import json
import logging
import math
import os
import shutil
import signal
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from lookalike import signals
from lookalike.settings import Settings

if TYPE_CHECKING:
    from lookalike.errors import UserError
    from training.trainer import TrainOptions, TrainResult

log = logging.getLogger("lookalike")


def add_parser(sub: Any) -> None:
    from lookalike.cli import folder  # the parser's module, which calls this

    p = sub.add_parser("train", help="fine-tune the model on a catalog (metric learning)")
    p.add_argument("--catalog", type=Path, required=True,
                   help="catalog in the format publish and eval read")
    p.add_argument("--out", type=folder("the model directory"), required=True,
                   help="model directory to write: a new or empty folder, or an earlier "
                   "model directory (nothing but config.json, top.weights.h5, report.json)")
    p.add_argument("--group-key", help="catalog field whose products count as alike too "
                   "(group_id: a style across colours; category)")
    p.add_argument("--tune", choices=["projection", "blocks"], default="projection",
                   help="what trains: a linear projection of the frozen network's pooled "
                   "features (default) or its last blocks and head conv")
    p.add_argument("--epochs", type=int, help="default: 20 (projection), 8 (blocks)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the split, the views and the training (default 0)")
    p.add_argument("--loss", choices=["supcon", "triplet", "proxy"],
                   help="supervised contrastive, batch-hard triplet or normalised softmax over "
                   "proxies; default: triplet (proxy gains on group-level queries and loses "
                   "on other photos of trained products: docs/training.md)")
    p.add_argument("--views", type=int, default=4, help="altered views cached per photo")
    p.add_argument("--train-blocks", type=int, default=1,
                   help="with --tune blocks: last MBConv blocks retrained with the head conv "
                   "(0: head conv only)")
    p.add_argument("--colour-jitter", type=float,
                   help="share of views with shifted colours (default 0.5 with --group-key)")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="share of the catalog held out to measure R@1 before and after "
                   "(default 0.2)")
    p.add_argument("--val-split", choices=["product", "group"], default="product",
                   help="hold out products (default) or whole groups (does it carry to new "
                   "styles?)")
    p.add_argument("--keep", choices=["last", "best"],
                   help="epoch to write: the last (the projection's default) or the best on "
                   "validation, the untrained model counting as epoch 0 (the default of blocks "
                   "and of --loss proxy)")
    p.add_argument("--spread", type=float,
                   help="weight of the penalty that keeps the CNN vectors as spread as the "
                   "untrained model's (default 10 for the projection's triplet and supcon "
                   "losses, 0 for proxy and blocks; 0: off)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def _fmt(scores: dict[str, Any]) -> str:
    parts = [f"exact R@1 {scores['item']['R@1']:.3f} R@10 {scores['item']['R@10']:.3f}"]
    group = scores.get("group_similar")
    if group:
        parts.append(f"similar (other products of the group) R@1 {group['R@1']:.3f} "
                     f"R@10 {group['R@10']:.3f}")
    return "; ".join(parts)


def _fell(before: dict[str, Any], after: dict[str, Any]) -> bool:
    return any(after[task]["R@1"] < before[task]["R@1"]
               for task in ("item", "group_similar") if before.get(task) and after.get(task))


def train_options(settings: Settings, args: argparse.Namespace) -> TrainOptions:
    """The command line and settings as :class:`TrainOptions`: the defaults of ``--tune`` and
    ``--loss`` (:func:`training.trainer.tune_options`), then what the command line sets."""
    from lookalike.errors import UserError
    from training.trainer import TrainOptions, tune_options

    chosen: dict[str, Any] = {"epochs": args.epochs} if args.epochs is not None else {}
    if args.keep is not None:
        chosen["keep_best"] = args.keep == "best"
    if args.spread is not None:
        chosen["spread_weight"] = args.spread
    options = TrainOptions(**{
        **tune_options(args.tune, args.loss), **chosen,
        "group_key": args.group_key, "seed": args.seed, "views": args.views,
        "colour_jitter": args.colour_jitter, "val_fraction": args.val_fraction,
        "val_by_group": args.val_split == "group",
        "colour_weight": settings.model.colour_weight,
        "max_pixels": settings.images.max_pixels,
        "max_bytes": settings.images.max_bytes,
    })
    if (options.epochs < 1 or options.views < 1 or not 0 < options.val_fraction < 1
            or not (math.isfinite(options.spread_weight) and options.spread_weight >= 0)):
        raise UserError("--epochs and --views must be >= 1, --val-fraction within (0, 1), "
                        "--spread >= 0")
    if options.colour_jitter is not None and not 0 <= options.colour_jitter <= 1:
        raise UserError(f"--colour-jitter is a share of the views, from 0 to 1, got "
                        f"{args.colour_jitter}")
    if not 0 <= options.seed < 2**32:
        raise UserError(f"--seed must be from 0 to 2**32 - 1, got {options.seed}")
    if args.train_blocks < 0:
        raise UserError(f"--train-blocks must be >= 0 (0: the head conv only), got "
                        f"{args.train_blocks}")
    if options.group_key == "":
        raise UserError("--group-key must name a catalog field (group_id, category, ...), "
                        "got ''")
    return options


def _model_directory(out: Path) -> list[Path]:
    """Create ``--out`` (and its parents) and check it can be written, before any work: a path
    that cannot hold the model fails in one line now, not after minutes of training. An
    existing folder must be empty or an earlier model directory (:func:`_check_reusable`), and
    not a mount point (the new model is swapped in by renaming folders: :func:`_swap_in`).
    Returns the folders created here, deepest first: what a failed run removes again."""
    from lookalike.errors import UserError

    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: give a folder for the model directory")
    if out.is_dir():
        _check_reusable(out)
        if os.path.ismount(out):
            raise UserError(f"--out {out} is a mount point: train writes the model next to "
                            "--out and renames it into place; give a folder inside it")
    created = [folder for folder in (out, *out.parents) if not folder.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create --out {out}: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise UserError(f"cannot write --out {out}: permission denied")
    return created


def _check_reusable(out: Path) -> None:
    """An existing ``--out`` is written into only when it is empty or an earlier model
    directory: nothing but the files train writes, and a config.json that reads as a trained
    model's. A folder of the user's own files (their config.json, notes) is left as it is."""
    from embedding.trained import MODEL_FILES, TrainedModelError, read_config
    from lookalike.errors import UserError

    rule = (f"--out must be a new or empty folder, or an earlier model directory (nothing "
            f"but {', '.join(MODEL_FILES)})")
    try:
        names = sorted(p.name for p in out.iterdir())
    except OSError as exc:
        raise UserError(f"cannot read --out {out}: {exc.strerror or exc}") from None
    if not names:
        return
    other = [name for name in names if name not in MODEL_FILES]
    if other:
        shown = ", ".join(other[:3]) + (f" and {len(other) - 3} more" if len(other) > 3 else "")
        raise UserError(f"{rule}; {out} holds {shown}")
    try:
        read_config(out)
    except TrainedModelError as exc:  # reads no link to /dev/zero, no FIFO (read_config)
        raise UserError(f"{rule}; {out} holds {', '.join(names)} but no trained model's "
                        f"config.json ({exc})") from None


def _staging(out: Path) -> Path:
    """Where the new model is written: a hidden folder next to ``--out`` (next to the folder
    a link points to), named for this run, so renaming it into place is one rename within
    one file system. Not created here (:func:`_make_staging`)."""
    real = out.resolve()
    return real.parent / f".{real.name}.train-{uuid.uuid4().hex[:STAGING_ID]}"


STAGING_ID = 12
"""Hex digits of a run's id in its staging folder's name (``.NAME.train-<id>``)."""


@contextlib.contextmanager
def _exclusive(out: Path) -> Iterator[Path]:
    """Hold ``.NAME.train.lock`` beside ``--out`` (``flock``) for the run: a second train into
    the same folder is refused at once (exit 4, as a Milvus Lite database held by another
    process), where both ran and the second silently replaced the first's model. The file is
    removed as the lock is let go; one left by a killed run is taken over (the kernel
    released its lock). A lock file removed between its open and its lock is locked anew."""
    from lookalike.errors import ExitCode, UserError

    real = out.resolve()
    lock = real.parent / f".{real.name}.train.lock"
    for _ in range(10):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise UserError(f"cannot write next to --out {out} (train locks it with {lock}): "
                            f"{exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            opened, now = os.fstat(fd), os.stat(lock, follow_symlinks=False)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise UserError(f"--out {out} is being written by another lookalike train (it "
                                f"holds {lock}); wait for it, or choose another --out",
                                ExitCode.UNAVAILABLE) from None
            if exc.errno == errno.ENOENT:
                continue  # its holder removed it as it finished
            raise UserError(f"cannot lock --out {out} with {lock}: "
                            f"{exc.strerror or exc}") from None
        if (opened.st_dev, opened.st_ino) == (now.st_dev, now.st_ino):
            break
        os.close(fd)
    else:
        raise UserError(f"cannot lock --out {out} with {lock}: it keeps being replaced",
                        ExitCode.UNAVAILABLE)
    try:
        yield lock
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)


def _remove_stale_staging(out: Path) -> None:
    """Remove the ``.NAME.train-<id>`` folders beside ``--out`` that a killed run left (kill
    -9, a power cut: no ``finally`` ran). Called under :func:`_exclusive`, so no live run of
    this ``--out`` is writing one. Left alone where a ``.NAME.old-*`` folder says a run was
    killed in the instant it swapped its model in (both are whole: the operator decides)."""
    real = out.resolve()
    prefix = f".{real.name}.train-"
    stale = [p for p in real.parent.glob(glob.escape(prefix) + "*")
             if len(p.name) == len(prefix) + STAGING_ID and p.is_dir() and not p.is_symlink()
             and all(c in "0123456789abcdef" for c in p.name[len(prefix):])]
    if not stale:
        return
    swapping = sorted(real.parent.glob(glob.escape(f".{real.name}.old-") + "*"))
    if swapping:
        log.warning("left %s: a run was stopped while it swapped a model in (%s holds the "
                    "previous one); keep the one you want as --out, remove the others",
                    ", ".join(map(str, stale)), swapping[0])
        return
    for folder in stale:
        shutil.rmtree(folder, ignore_errors=True)
    log.info("removed %d staging folder(s) a killed run left: %s", len(stale),
             ", ".join(p.name for p in stale))


def _make_staging(staging: Path, out: Path) -> None:
    """Create ``staging`` with the permissions of ``--out`` (an operator's shared folder keeps
    its mode once the new model is renamed into its place): a parent that cannot be written
    fails now, in one line, not after the training."""
    from lookalike.errors import UserError

    try:
        staging.mkdir()
        shutil.copymode(out, staging)
    except OSError as exc:
        raise UserError(f"cannot write next to --out {out} (the model is written in "
                        f"{staging.parent} and renamed into place): "
                        f"{exc.strerror or exc}") from None


def _swap_in(staging: Path, out: Path) -> None:
    """Put the complete new model at ``--out`` in one step, the old one kept until then: an
    empty ``--out`` is replaced by renaming ``staging`` onto it (atomic); an earlier model is
    renamed aside first, then removed. SIGINT and SIGTERM wait for the two renames, which a
    stop between them would leave with no model at ``--out``; after them the run is done, so
    a signal that came is logged, not acted on. Only a crash in that instant leaves the old
    model in ``.NAME.old-*`` and the new one in ``.NAME.train-*``, both whole."""
    real = out.resolve()
    with signals.held() as received:
        try:
            os.replace(staging, real)  # onto a new or empty folder
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            aside = real.parent / f".{real.name}.old-{uuid.uuid4().hex[:12]}"
            os.rename(real, aside)
            try:
                os.rename(staging, real)
            except BaseException:
                os.rename(aside, real)
                raise
            shutil.rmtree(aside, ignore_errors=True)
    if received:
        log.warning("%s came as the new model was renamed into place; the run had finished",
                    received[0].name)


def _remove_created(staging: Path, created: list[Path]) -> None:
    """Undo a failed or stopped run: the staging folder with what was written in it, then the
    folders :func:`_model_directory` created, deepest first. ``--out`` itself was not written
    to; a folder that existed before is never touched, and one that holds anything else is
    left."""
    shutil.rmtree(staging, ignore_errors=True)
    for folder in created:
        try:
            folder.rmdir()
        except OSError:
            return


class _Stopped(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived during the run."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stop(signum: int, _frame: FrameType | None) -> None:
    """SIGINT's and SIGTERM's handler during the run (:func:`lookalike.signals.handling`):
    :class:`_Stopped`, so the run can remove the folder it created and end in one line;
    SIGTERM's default would end the process where it stands. A second signal meanwhile ends
    the process as the signal does by default."""
    for sig in signals.STOP_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    raise _Stopped(signum)


def _fit(settings: Settings, args: argparse.Namespace, options: TrainOptions,
         directory: Path) -> TrainResult:
    """Build the backbone ``--tune`` names, train it and write the model to ``directory``:
    the part that takes minutes."""
    from embedding.runtime import enable_compile_cache, import_keras
    from training.backbone import Backbone, EfficientNetBackbone, ProjectionBackbone
    from training.trainer import train as run_training

    import_keras()
    m = settings.model
    enable_compile_cache(m.compile_cache)
    backbone: Backbone = (
        ProjectionBackbone(m.variant, m.square, m.batch_size) if args.tune == "projection"
        else EfficientNetBackbone(m.variant, m.square, args.train_blocks, m.batch_size))
    return run_training(args.catalog, directory, backbone, options)


def _failure(exc: BaseException, out: Path, created: list[Path]) -> UserError | None:
    """The one line a run that did not finish ends with (None: a bug, keep its traceback)."""
    from lookalike.errors import ExitCode, UserError
    from training.data import TrainingDataError

    if isinstance(exc, _Stopped):
        left = (f"removed what it had created: {', '.join(map(str, created))}" if created
                else f"{out} existed before and is left in place")
        code = ExitCode.INTERRUPTED if exc.signum == signal.SIGINT else ExitCode.TERMINATED
        return UserError(f"stopped by {exc}: training did not finish; {left}", code)
    if isinstance(exc, (TrainingDataError, ValueError)):
        return UserError(str(exc))
    return None


def train(settings: Settings, args: argparse.Namespace) -> int:
    from lookalike.errors import UserError

    if settings.model.path is not None:
        raise UserError("lookalike train starts from the ImageNet weights; unset "
                        "LOOKALIKE_MODEL__PATH")
    options = train_options(settings, args)
    if not args.catalog.is_file():  # before the model is built: that takes seconds
        if args.catalog.exists():  # a folder, a FIFO, a device
            raise UserError(f"{args.catalog}: not a regular file (a catalog is a JSON Lines "
                            "file)")
        raise UserError(f"{args.catalog}: no such catalog file")
    created = _model_directory(args.out)
    staging = _staging(args.out)
    try:
        with _exclusive(args.out), signals.handling(_stop):
            _remove_stale_staging(args.out)
            _make_staging(staging, args.out)
            result = _fit(settings, args, options, staging)
            _swap_in(staging, args.out)
    except BaseException as exc:
        _remove_created(staging, created)  # a run that did not finish leaves no folder
        failure = _failure(exc, args.out, created)
        if failure is None:
            raise
        raise failure from None
    if args.json:
        print(json.dumps(result.report, indent=2))
        return 0
    seconds = result.report["seconds"]
    print(f"model {result.model_version} written to {args.out}")
    print(f"validation before: {_fmt(result.before)}")
    kept = "best" if options.keep_best else "last"
    print(f"validation after:  {_fmt(result.after)} ({kept} epoch, {result.best_epoch})")
    if result.report.get("not_trained"):
        print(f"not trained: {result.report['not_trained']}")
    elif result.best_epoch == 0:
        print("no epoch beat the untrained model on validation: the directory holds the "
              "ImageNet weights, switching to it changes nothing")
    elif _fell(result.before, result.after):
        print("validation fell at the written epoch: its queries are altered copies of "
              "held-out photos, not real other photos (docs/training.md, 'Keeping the "
              "spread'); check with lookalike eval on real queries before switching, or use "
              "--keep best")
    skipped = result.report.get("skipped") or []
    if skipped:
        shown = "; ".join(f"{s['image']}: {s['reason']}" for s in skipped[:3])
        print(f"skipped {len(skipped)} image(s) that could not be read (all in the report): "
              f"{shown}{' ...' if len(skipped) > 3 else ''}")
    print(f"time {seconds['total']:.0f}s (views {seconds['cache_train']:.0f}s, "
          f"fit {seconds['fit']:.0f}s); use it with LOOKALIKE_MODEL__PATH={args.out}",
          file=sys.stdout)
    return 0
