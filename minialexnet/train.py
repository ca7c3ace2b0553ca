"""``python -m minialexnet.train``: train AlexNet with the paper's recipe (§5).

    python -m minialexnet.train                   # mini AlexNet on the built-in shapes, minutes
    python -m minialexnet.train --data-dir /data/imagenet --subset imagenet-100 --arch paper
    python -m minialexnet.train --resume runs/X/checkpoint_last.npz --epochs 30   # continue
    python -m minialexnet.train --resume runs/X/checkpoint_best.npz --evaluate    # 10-crop test
    python -m minialexnet.train --pretrained bvlcalexnet-12.onnx --data-dir my_photos/ \
        --freeze fc7                              # fine-tune: a new fc8 for your classes

The command line around ``minialexnet.training.fit`` (the epoch loop, what an epoch does, what
the output folder receives and how randomness is seeded are described there): it parses and
checks every input up front, picks the recipe of the architecture (``ARCH_DEFAULTS``: the
short default run of "mini" divides the learning rate at a fixed epoch instead of on a
plateau), and turns bad input into a one-line usage message. ``--evaluate`` runs
``minialexnet.training.evaluation.evaluate_checkpoint``, as ``python -m minialexnet.evaluate``
does.

Every option, the ``--resume`` checkpoint and the output folder are checked before any data
is built; the output folder is then held by this run alone until it ends
(``minialexnet.training.runfolder``). ``--resume`` without ``--data-dir``/``--subset`` trains
on the dataset recorded in the checkpoint, as evaluate does.

Exit status: 0; 2 for bad input (no traceback); 1 when training diverged or an epoch could
not be saved (a full disk); 130 on Ctrl-C. Each keeps the last complete checkpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import time

import numpy as np

from minialexnet.cli import (
    BACKENDS,
    UsageError,
    check_devices,
    float_at_least,
    nonnegative_int,
    open_datasets,
    positive_int,
    print_line,
    recorded_dataset,
    select_backend,
)
from minialexnet.data.folders import DataError
from minialexnet.data.imagenet import dataset_record
from minialexnet.distributed import init_context, prepared_once, stop_all_on_failure
from minialexnet.model import INITS, AlexNet
from minialexnet.optim import StepSchedule
from minialexnet.training import TrainConfig, TrainingDiverged, fit, make_engine
from minialexnet.training.checkpoint import (
    CheckpointError,
    check_finite,
    load_checkpoint,
    restore_model,
)
from minialexnet.training.config import ARCH_DEFAULTS
from minialexnet.training.evaluation import evaluate_checkpoint
from minialexnet.training.finetune import FINE_TUNING_DEFAULTS, fine_tuning_stats, new_classifier
from minialexnet.training.model_files import load_model, stored_image_size
from minialexnet.training.resume import check_training_keys
from minialexnet.training.runfolder import OutputFolderError
from minialexnet.training.runlog import CURVES_PNG, METRICS_CSV
from minialexnet.training.trainer import (
    CHECKPOINT_LAST,
    SaveFailed,
    check_datasets,
    hold_run_folder,
)

FINE_TUNED_FROM = "fine_tuned_from"  # checkpoint meta of a fine-tuning run: the file


@dataclasses.dataclass
class NetworkSource:
    """Where the run's network comes from: an ``--arch`` table, or a ``--pretrained`` file.

    name : the output folder's prefix (the arch, or ``finetune-<variant>``); defaults : the
    recipe (``ARCH_DEFAULTS[arch]`` or ``FINE_TUNING_DEFAULTS``); image_size : the stored
    image side the data is decoded at; pretrained, source : the network read from
    ``--pretrained`` and its checkpoint/ONNX record (``None`` otherwise); freeze : the last
    frozen layer of a fine-tuning run (``None``: none).
    """

    name: str
    defaults: dict
    image_size: int
    fine_tuning: bool = False
    pretrained: object = None
    source: object = None
    freeze: str | None = None


def build_parser() -> argparse.ArgumentParser:
    """The options of ``minialexnet-train`` (data, model and optimization, run)."""
    p = argparse.ArgumentParser(
        prog="minialexnet-train",
        description="Train AlexNet (Krizhevsky et al. 2012) with the paper's SGD recipe. "
        "Without arguments: the mini AlexNet on the built-in synthetic shapes "
        "dataset, a few minutes on a laptop CPU.",
    )
    _add_data_options(p.add_argument_group("data"))
    _add_model_options(p.add_argument_group("model and optimization"))
    _add_run_options(p.add_argument_group("run"))
    return p


def _add_data_options(data) -> None:
    data.add_argument(
        "--data-dir",
        metavar="DIR",
        help="ImageNet-style folder (train/<class>/*.JPEG, val/...) or a prepared "
        "cache; default: the built-in synthetic dataset",
    )
    data.add_argument(
        "--subset",
        metavar="NAME",
        help="class subset of --data-dir: imagenet-100, imagenet-1k or a text file "
        "of class folder names",
    )
    data.add_argument(
        "--val-labels",
        metavar="FILE",
        help="labels of a flat val/ folder ('filename wnid' lines, Caffe's "
        "val.txt, Kaggle's LOC_val_solution.csv, or the devkit's ground "
        "truth with meta.mat)",
    )
    data.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="this dataset's cache folder (default: under "
        "~/.cache/minialexnet/datasets, or $MINIALEXNET_CACHE)",
    )
    data.add_argument(
        "--workers",
        type=nonnegative_int,
        default=0,
        help="threads preparing batches (default 0: the main thread)",
    )


def _add_model_options(model) -> None:
    model.add_argument(
        "--init",
        choices=INITS,
        default=None,
        help="initial weights and biases: paper (§5 as written: biases 1) or "
        "bvlc (BVLC's Caffe reference: biases 0.1, fc6/fc7 std 0.005). "
        "Default: bvlc for paper, whose §5 biases of 1 make the loss "
        "diverge or stay flat at lr 0.01 (docs/imagenet100.md); paper for "
        "mini; with --resume the checkpoint's",
    )
    model.add_argument(
        "--arch",
        choices=sorted(ARCH_DEFAULTS),
        default=None,
        help="network variant (default: mini, or the checkpoint's with --resume)",
    )
    model.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help=f"total epochs (default: 90 for paper, {ARCH_DEFAULTS['mini']['epochs']} for mini)",
    )
    model.add_argument(
        "-b",
        "--batch-size",
        type=positive_int,
        default=None,
        help="mini-batch size (default: 128 for paper, "
        f"{ARCH_DEFAULTS['mini']['batch_size']} for mini; with --resume "
        f"the checkpoint's)",
    )
    model.add_argument(
        "--lr",
        type=float_at_least(0, False),
        default=None,
        help="initial learning rate (default: 0.01 for paper, "
        f"{ARCH_DEFAULTS['mini']['lr']} for mini)",
    )
    model.add_argument(
        "--momentum",
        type=float_at_least(0, True),
        default=0.9,
        help="SGD momentum (default: 0.9, the paper's)",
    )
    model.add_argument(
        "--wd",
        "--weight-decay",
        dest="weight_decay",
        type=float_at_least(0, True),
        default=0.0005,
        help="weight decay inside the momentum update (default: 0.0005)",
    )
    model.add_argument(
        "--schedule",
        choices=("plateau", "step", "none"),
        default=None,
        help="plateau: divide lr by 10 when val error stops improving (at most "
        "3 times, the paper; default for paper); step: divide by 10 every "
        "--step-size epochs (default for mini); none: constant. With "
        "--resume: the checkpoint's",
    )
    model.add_argument(
        "--step-size",
        type=positive_int,
        default=None,
        help="epochs between divisions with --schedule step (default: 30 for "
        f"paper, {ARCH_DEFAULTS['mini']['step_size']} for mini)",
    )
    model.add_argument(
        "--pretrained",
        metavar="FILE",
        default=None,
        help="fine-tune a pretrained network (a checkpoint .npz or an .onnx "
        "file, e.g. the ONNX model zoo's bvlcalexnet-12.onnx): every layer "
        "is kept but fc8, which is new for the data's classes; trains with "
        "the file's preprocessing and input size. Defaults then: "
        f"{FINE_TUNING_DEFAULTS['epochs']} epochs, lr "
        f"{FINE_TUNING_DEFAULTS['lr']}, constant schedule, batch "
        f"{FINE_TUNING_DEFAULTS['batch_size']} (at most the training set)",
    )
    model.add_argument(
        "--freeze",
        metavar="LAYER",
        default=None,
        help="with --pretrained: freeze every layer up to and including LAYER "
        "(conv1..conv5, fc6, fc7); they compute no weight gradients and "
        "stay unchanged. --freeze fc7 is feature extraction (only fc8 "
        "learns), --freeze conv5 keeps the convolutional features",
    )
    model.add_argument(
        "--seed",
        type=nonnegative_int,
        default=0,
        help="seed of the one generator behind all randomness (default: 0)",
    )


def _add_run_options(run) -> None:
    run.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        metavar="N",
        help="CPU threads for the Numba kernels and NumPy's BLAS together (default: all cores)",
    )
    run.add_argument(
        "--output",
        metavar="DIR",
        help="folder for checkpoints, metrics.csv and the plot (default: "
        "runs/<arch>-<data>-<time>, or the resumed checkpoint's folder)",
    )
    run.add_argument(
        "--resume",
        metavar="CHECKPOINT",
        help="continue training from a checkpoint (bit-identical to an uninterrupted run)",
    )
    run.add_argument(
        "--evaluate",
        action="store_true",
        help="only evaluate the --resume checkpoint on the validation set "
        "(centre crop and the paper's 10 crops)",
    )
    run.add_argument(
        "--backend",
        choices=BACKENDS,
        default="numba",
        help="kernels: numba (compiled CPU, default), numpy (readable reference), cuda",
    )
    run.add_argument(
        "--devices",
        default=None,
        metavar="LIST",
        help="split the net over two devices as in the paper (§3.2): "
        "cpu:0,cpu:1 (two CPU threads), cuda:0,cuda:1 (two GPUs, with "
        "--backend cuda), cuda:0,cuda:0 (one GPU, two streams). Default: "
        "one device (the same function, via grouped convolutions)",
    )
    run.add_argument(
        "--tower-mode",
        choices=("threads", "sequential"),
        default="threads",
        help="with --devices on the CPU: run the towers at the same time "
        "(threads) or one after the other (sequential, for stepping through)",
    )
    run.add_argument(
        "--gemm",
        choices=("auto", "numba", "cublas"),
        default="auto",
        help="with --backend cuda, the matrix products: cuBLAS where nvmath-python "
        "is installed (auto), the hand-written SGEMM (numba) or cublas",
    )
    run.add_argument(
        "--print-freq",
        type=positive_int,
        default=20,
        metavar="N",
        help="progress line every N batches (default: 20)",
    )


def main(argv=None) -> int:
    """``minialexnet-train``: parse, check every input up front, train (or evaluate).

    Bad input exits with status 2 and an argparse-style message (no traceback); a diverged
    run exits with 1, Ctrl-C with 130, each keeping the last complete checkpoint.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    context = init_context()  # several processes only under an MPI launcher
    with contextlib.ExitStack() as stack:
        stack.enter_context(stop_all_on_failure(context))
        if not context.is_main:  # one voice: rank 0's
            stack.enter_context(
                contextlib.redirect_stdout(stack.enter_context(open(os.devnull, "w")))
            )
        try:
            code = _run(args, parser, context)
        except KeyboardInterrupt:
            print(
                "\ninterrupted: nothing was written for the unfinished epoch; the last "
                "complete checkpoint (if any) is intact",
                file=sys.stderr,
            )
            code = 130
        if code and context.size > 1:
            raise SystemExit(code)  # a failure on one rank stops every rank
        return code


def _run(args, parser, context) -> int:
    """Check every option, the checkpoint and the output folder (cheap), then build the data
    (expensive) and evaluate or train, holding the output folder for the whole run."""
    try:
        select_backend(args.backend)
        check_devices(args.devices)
    except (ValueError, RuntimeError, UsageError) as err:  # backend, no usable GPU, devices
        parser.error(str(err))
    if args.evaluate and args.resume is None:
        parser.error("--evaluate needs a checkpoint: pass --resume CHECKPOINT")
    ckpt = _load_resumed(args, parser)
    rng = np.random.default_rng(args.seed)  # the one generator behind all randomness
    net = _network_source(args, parser, ckpt, rng)
    if args.evaluate:
        return _evaluate(args, parser, ckpt, _open_data(args, parser, net.image_size, True)[1])
    config = _config_from_args(args, parser, ckpt, net.defaults)
    run = (args, parser, ckpt, net, config, context, rng)

    def open_data():
        return prepared_once(lambda: _open_data(args, parser, net.image_size, False), context)

    if not context.is_main:  # rank 0 alone holds and writes the output folder
        return _train(run, None, open_data())
    try:
        with hold_run_folder(_output_path(args, ckpt, net.name), print_line) as output:
            if ckpt is None and os.path.exists(os.path.join(output, CHECKPOINT_LAST)):
                parser.error(
                    f"{output} already holds a run ({CHECKPOINT_LAST}); continue it "
                    f"with --resume {os.path.join(output, CHECKPOINT_LAST)}, or "
                    f"choose another --output"
                )
            return _train(run, output, open_data())
    except OutputFolderError as err:
        parser.error(str(err))


def _network_source(args, parser, ckpt, rng) -> NetworkSource:
    """The ``--arch`` table, or the ``--pretrained`` file (read now: a bad file is reported
    before any data is built); a resumed run's from its checkpoint."""
    fine_tuning = args.pretrained is not None or (
        ckpt is not None and FINE_TUNED_FROM in ckpt.meta
    )
    if args.freeze is not None and not fine_tuning:
        parser.error("--freeze goes with --pretrained FILE (the network to fine-tune)")
    if not fine_tuning:
        arch = ckpt.meta["arch"] if ckpt is not None else (args.arch or "mini")
        defaults = ARCH_DEFAULTS[arch]
        image_size = (
            ckpt.meta.get("image_size", defaults["image_size"]) if ckpt else defaults["image_size"]
        )
        return NetworkSource(arch, defaults, image_size)
    if args.arch is not None and ckpt is None:
        parser.error("--arch does not go with --pretrained: the file decides the network")
    try:
        if ckpt is not None:  # resuming: the checkpoint holds the whole network
            model, pretrained, source = AlexNet.from_config(ckpt.meta["model"]), None, None
            freeze = ckpt.meta.get("freeze") if args.freeze is None else args.freeze
        else:
            pretrained, source = load_model(args.pretrained, rng=rng)
            model, freeze = pretrained, args.freeze
        image_size = stored_image_size(model, ckpt or source)
    except (CheckpointError, ValueError, OSError) as err:
        parser.error(str(err))
    return NetworkSource(
        f"finetune-{model.config['variant']}",
        FINE_TUNING_DEFAULTS,
        image_size,
        True,
        pretrained,
        source,
        freeze,
    )


def _build_network(args, ckpt, net: NetworkSource, train_set, stats, rng):
    """``(model, stats)`` for the data: the arch's fresh network, or the pretrained one with
    a new fc8 for the data's classes and its layers up to ``--freeze`` frozen."""
    if not net.fine_tuning:
        init = (
            ckpt.meta["model"].get("init", "paper") if ckpt else args.init or net.defaults["init"]
        )
        return AlexNet(
            train_set.num_classes, net.name, rng=rng, init=init, class_names=train_set.class_names
        ), stats
    if net.pretrained is not None:  # a new fine-tuning run
        model = new_classifier(net.pretrained, train_set.class_names, rng)
        stats = fine_tuning_stats(net.pretrained, net.source, train_set, log=print_line)
    else:  # resuming one
        model = AlexNet.from_config(ckpt.meta["model"], rng=rng)
    model.freeze(net.freeze)
    return model, stats


def _open_data(args, parser, image_size: int, val_only: bool):
    """``open_datasets`` with errors as usage messages."""
    try:
        return open_datasets(args, image_size, val_only=val_only)
    except (DataError, ValueError, OSError) as err:
        parser.error(str(err))


def _load_resumed(args, parser):
    """The ``--resume`` checkpoint (``None`` without one), checked as far as it can be
    without the data: readable, finite, the architecture, resumable; without ``--data-dir``
    and ``--subset`` its recorded dataset becomes the run's (as for evaluate)."""
    if args.resume is None:
        return None
    try:
        ckpt = load_checkpoint(args.resume)
        check_finite(ckpt, args.resume)
    except CheckpointError as err:
        parser.error(str(err))
    if args.arch is not None and args.arch != ckpt.meta["arch"]:
        parser.error(
            f"{args.resume} holds a {ckpt.meta['arch']!r} AlexNet, not "
            f"{args.arch!r}: drop --arch or pass --arch {ckpt.meta['arch']}"
        )
    if ckpt.meta["arch"] not in ARCH_DEFAULTS and FINE_TUNED_FROM not in ckpt.meta:
        parser.error(
            f"{args.resume} holds an AlexNet variant {ckpt.meta['arch']!r} that "
            f"the command line does not train; choose one of "
            f"{', '.join(sorted(ARCH_DEFAULTS))}"
        )
    if not args.evaluate:
        try:
            check_training_keys(ckpt.meta, args.resume)
        except CheckpointError as err:
            parser.error(str(err))
    if args.data_dir is None and args.subset is None:
        try:
            record = recorded_dataset(ckpt.meta, args.resume)
        except UsageError as err:
            parser.error(str(err))
        if record["kind"] == "folder":
            args.data_dir, args.subset = record.get("data_dir"), record.get("subset")
            args.val_labels = args.val_labels or record.get("val_labels")
            args.val_fraction = record.get("val_fraction", 0.1)
            args.holdout_seed = record.get("seed", 0)
            print_line(
                f"data: as recorded in {args.resume}: --data-dir {args.data_dir}"
                f"{' --subset ' + args.subset if args.subset else ''}"
            )
    return ckpt


def _train(run, output, data) -> int:
    """Build the network from the options and the data, then ``fit``."""
    args, parser, ckpt, net, config, context, rng = run
    train_set, val_set, stats, data_name = data
    try:
        model, stats = _build_network(args, ckpt, net, train_set, stats, rng)
        if net.fine_tuning and args.batch_size is None and ckpt is None:
            config = dataclasses.replace(config, batch_size=min(config.batch_size, len(train_set)))
        check_datasets(model, train_set, val_set, config.batch_size)
    except (CheckpointError, ValueError) as err:
        parser.error(str(err))
    if ckpt is not None and args.lr is not None:
        print_line(
            "note: --lr is ignored with --resume: the checkpoint's learning rate and "
            "schedule continue"
        )
    print_line(model.summary())
    print_line(
        f"data: {data_name}, {len(train_set)} training and {len(val_set)} validation "
        f"images of {train_set.image_size}x{train_set.image_size}, "
        f"{train_set.num_classes} classes"
    )
    meta = {
        "data": data_name,
        "seed": args.seed,
        "dataset": dataset_record(
            args.data_dir,
            args.subset,
            getattr(args, "val_fraction", None) or 0.1,
            getattr(args, "holdout_seed", None) or 0,
            args.val_labels,
        ),
    }
    if net.fine_tuning:
        meta.update(
            {"freeze": net.freeze, FINE_TUNED_FROM: args.pretrained or ckpt.meta[FINE_TUNED_FROM]}
        )
        print_line(
            f"fine-tuning {meta[FINE_TUNED_FROM]}: new fc8 for {train_set.num_classes} "
            f"classes, frozen: {', '.join(model.frozen_layers) or 'nothing'}; lr "
            f"{config.lr:g}"
        )
    print_line(
        f"output: {output}  (backend {args.backend}, batch {config.batch_size}, "
        f"{config.epochs} epochs{_processes(context)})"
    )
    try:
        fit(
            model,
            train_set,
            val_set,
            config,
            stats=stats,
            rng=rng,
            output=output,
            resume=args.resume,
            log=print_line,
            meta=meta,
            context=context,
        )
    except ValueError as err:  # a checkpoint that cannot be resumed, bad devices
        parser.error(str(err))
    except (TrainingDiverged, SaveFailed) as err:
        print(f"minialexnet-train: {err}", file=sys.stderr)
        return 1
    print_line(f"done: checkpoints, {METRICS_CSV} and {CURVES_PNG} in {output}")
    return 0


def _processes(context) -> str:
    if context.size == 1:
        return ""
    return f", data-parallel over {context.size} MPI processes"


def _config_from_args(args, parser, ckpt, defaults: dict) -> TrainConfig:
    """The run's settings: the options, else the resumed checkpoint's, else the arch's."""
    epochs = args.epochs or defaults["epochs"]
    batch_size = (
        args.batch_size
        or (ckpt.meta.get("batch_size") if ckpt else None)
        or defaults["batch_size"]
    )
    if ckpt is not None and epochs <= ckpt.meta.get("epoch", 0):
        parser.error(
            f"{args.resume} has already trained {ckpt.meta['epoch']} epochs; pass "
            f"--epochs larger than that to continue"
        )
    return TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=args.lr or defaults["lr"],
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        schedule=_schedule_from_args(args, defaults, ckpt),
        workers=args.workers,
        threads=args.threads,
        print_freq=args.print_freq,
        device="cuda" if args.backend == "cuda" else "cpu",
        devices=args.devices,
        tower_mode=args.tower_mode,
        gemm=args.gemm,
    )


def _output_path(args, ckpt, arch: str) -> str:
    """``--output``, else the resumed checkpoint's folder, else ``runs/<arch>-<data>-<time>``."""
    if args.output:
        return args.output
    if ckpt is not None:
        return os.path.dirname(os.path.abspath(args.resume))
    data = (
        "synthetic"
        if args.data_dir is None and args.subset is None
        else os.path.splitext(os.path.basename(os.path.normpath(args.subset or args.data_dir)))[0]
    )
    return os.path.join("runs", f"{arch}-{data}-{time.strftime('%Y%m%d-%H%M%S')}")


def _schedule_from_args(args, defaults: dict, ckpt):
    """The ``fit`` schedule: ``--schedule``, else the resumed checkpoint's, else the arch's.

    (A resumed schedule's counters and step size come back from the checkpoint itself.)
    """
    name = args.schedule
    if name is None and ckpt is not None and "schedule" in ckpt.meta:
        name = (ckpt.meta["schedule"] or {"name": "none"})["name"]
    name = name or defaults["schedule"]
    if name == "step":
        step_size = args.step_size or defaults["step_size"]
        return lambda opt: StepSchedule(opt, step_size=step_size)
    return None if name == "none" else "plateau"


def _evaluate(args, parser, ckpt, val_set) -> int:
    """``--evaluate``: the checkpoint's centre-crop and ten-crop errors on ``val_set``."""
    model = AlexNet.from_config(ckpt.meta["model"])
    batch_size = args.batch_size or ckpt.meta.get("batch_size", 128)
    config = TrainConfig(
        batch_size=batch_size, device="cuda" if args.backend == "cuda" else "cpu", gemm=args.gemm
    )
    try:
        restore_model(model, ckpt, args.resume)
        results = evaluate_checkpoint(
            make_engine(model, None, config),
            ckpt,
            val_set,
            args.resume,
            batch_size=batch_size,
            workers=args.workers,
        )
    except CheckpointError as err:
        parser.error(str(err))
    for crops, r in results.items():
        print_line(
            f"{crops:>6} crop{'s' if crops == 'ten' else ''}: top-1 error "
            f"{100 * r['top1_err']:.2f}%, top-5 error {100 * r['top5_err']:.2f}%  "
            f"({r['images']} images)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
