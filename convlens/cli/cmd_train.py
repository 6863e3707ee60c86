"""``convlens train``: train a classifier into a run directory."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from . import app
from .common import JsonOpt, check_out_dir, emit_json, err_console, out_console

#: convlens.train.arch.DEFAULT_ARCH, repeated so that `convlens --help` does not import torch (a test checks they agree)
DEFAULT_ARCH = "conv16-bn-pool-conv32-bn-pool-conv64-bn-pool-fc128-bn-drop0.3"
#: convlens.train.defaults' rule for --augment auto, repeated for the same reason (a test checks they agree)
SMALL_DATA_AUGMENT = "rotate=10,translate=0.08,zoom=0.08"
SMALL_SPLIT = 1000


#: what --resume may be given with: the rest comes from the run's config.json
RESUME_FLAGS = ("data", "arch", "patience", "stop_at", "accelerator", "devices", "num_nodes", "strategy", "precision",
                "as_json", "resume")


def relaunchable() -> bool:
    """Whether Fabric can start the other processes of a data-parallel run by running this program's
    command line again (its subprocess launcher runs ``python ARGV0 ...`` or ``python -m MODULE ...``):
    true for the ``convlens`` console script and ``python -m convlens.cli``, false when ``main()`` is
    called from another program (a test runner, a notebook), whose command line is not this command."""
    import __main__

    spec = getattr(__main__, "__spec__", None)
    if spec is not None:
        return spec.name.split(".")[0] == "convlens"
    return Path(sys.argv[0]).name.startswith("convlens")


def _from_command_line(ctx: typer.Context, name: str) -> bool:
    """Whether the option ``name`` was given on the command line (not its default). By the source's
    name: Typer carries a click of its own, whose ``ParameterSource`` is not ``click.core``'s."""
    source = ctx.get_parameter_source(name)
    return getattr(source, "name", None) == "COMMANDLINE"


def _several(devices: str, num_nodes: int) -> bool:
    d = devices.strip()
    listed = [x for x in d.split(",") if x.strip()]
    return num_nodes > 1 or ("," in d and len(listed) > 1) or (d.isdigit() and int(d) > 1)


@app.command("train")
def train_cmd(
    ctx: typer.Context,
    data: Optional[str] = typer.Option(None, "--data", help="folder:PATH, cmu-faces:PATH, mnist:PATH, "
                                       "fashion-mnist:PATH or digits (with --resume: the run's own, unless given)."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="The run directory to write (refused if it exists, "
                                      "unless --force; with --resume: the run itself)."),
    label: Optional[str] = typer.Option(None, "--label", help="cmu-faces label: identity, eyes, pose or expression."),
    scale: int = typer.Option(2, "--scale", help="cmu-faces scale: 1 (128x120), 2 (64x60) or 4 (32x30)."),
    arch: Optional[str] = typer.Option(None, "--arch", help="A CNN spec like conv32-pool-conv64-pool-fc128-drop0.2, or "
                                       f"effnet-lite0, timm:NAME (default {DEFAULT_ARCH})."),
    augment: str = typer.Option("auto", "--augment", help="e.g. rotate=15,translate=0.1,zoom=0.1,flip=h "
                                f"(training split only); none for none. Default auto: {SMALL_DATA_AUGMENT} when a "
                                f"spec CNN trains from scratch on under {SMALL_SPLIT:,} training images (a small "
                                "data set), else none."),
    epochs: int = typer.Option(40, "--epochs"),
    batch_size: int = typer.Option(32, "--batch-size", help="Images per step and per process (with N processes the "
                                   "global batch is N times this; the learning rate is not scaled)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate (default 3e-3 for spec CNNs, 1e-3 "
                                       "for backbones)."),
    weight_decay: float = typer.Option(1e-4, "--weight-decay"),
    schedule: str = typer.Option("onecycle", "--schedule", help="onecycle, cosine or constant."),
    seed: int = typer.Option(0, "--seed"),
    val: float = typer.Option(0.1, "--val", help="Validation fraction."),
    test: float = typer.Option(0.2, "--test", help="Test fraction (ignored when the source has its own test split)."),
    patience: int = typer.Option(15, "--patience", help="Early stopping on validation loss; 0 turns it off."),
    stop_at: Optional[str] = typer.Option(None, "--stop-at", help="Stop at a goal, e.g. accuracy=0.99 (validation)."),
    freeze: bool = typer.Option(False, "--freeze", help="Train the new head only (features computed once)."),
    freeze_until: Optional[str] = typer.Option(None, "--freeze-until", help="Freeze this layer and every layer "
                                               "before it (names as `convlens layers` lists them, e.g. "
                                               "features.conv1)."),
    size: Optional[str] = typer.Option(None, "--size", help="Train on copies resized to WxH, e.g. 32x30 "
                                       "(width x height, as --scale and summaries)."),
    finetune_epochs: int = typer.Option(0, "--finetune-epochs", help="Then fine-tune everything for N epochs at a "
                                        "lower rate."),
    accelerator: str = typer.Option("cpu", "--accelerator", help="Lightning Fabric accelerator: cpu, cuda, gpu, mps, "
                                    "auto."),
    devices: str = typer.Option("1", "--devices", help="Processes per machine (CPU) or GPUs per machine: a count, "
                                "a list of GPU indices, or auto. Several: data-parallel (each trains on its shard)."),
    num_nodes: int = typer.Option(1, "--num-nodes", help="Machines taking part (each runs the same command; see the "
                                  "README: torchrun-style environment or SLURM)."),
    strategy: str = typer.Option("auto", "--strategy", help="auto or ddp (one model replica per process)."),
    precision: str = typer.Option("32-true", "--precision", help="Lightning Fabric precision, e.g. bf16-mixed."),
    resume: Optional[str] = typer.Option(None, "--resume", help="Continue a run that stopped before its last epoch "
                                         "(interrupted, early stopping, a goal) from its checkpoint; it is replaced."),
    preview: bool = typer.Option(False, "--preview", help="Also write augment_preview.png (3x3 augmented copies of "
                                 "one training image) into the run."),
    force: bool = typer.Option(False, "--force", help="Replace an existing run directory."),
    as_json: bool = JsonOpt,
) -> None:
    """Train a CNN (from a one-line spec or a pretrained backbone) and write a run directory."""
    import signal
    import threading

    from ..errors import SpecError
    from ..train import TrainOptions, train
    from ..train.fit import global_rank, make_fabric

    if resume is not None:
        given = [p.name for p in ctx.command.params
                 if _from_command_line(ctx, p.name) and p.name not in RESUME_FLAGS]
        if given:
            flag = "--" + given[0].replace("_", "-")
            raise SpecError(f"{flag} cannot be given with --resume: a resumed run keeps its recorded options (only "
                            f"--data, --arch (checked), --patience, --stop-at and the device options may be given)",
                            param=given[0])
    else:
        if data is None:
            raise SpecError("--data is needed (a source such as digits or folder:PATH), or --resume RUN to continue "
                            "a run", param="data")
        if out is None:
            raise SpecError("--out is needed (the run directory to write)", param="out")
        check_out_dir(out)
    dev: int | str = int(devices) if devices.isdigit() else devices
    # devices, accelerator, strategy and precision refused in one line before anything is read or started
    make_fabric(TrainOptions(accelerator=accelerator, devices=dev, num_nodes=num_nodes, strategy=strategy,
                             precision=precision))
    if _several(devices, num_nodes) and not relaunchable() and "LOCAL_RANK" not in os.environ:
        raise SpecError(f"--devices {devices}: several processes are started by running this command line again, "
                        "which only works from a shell (`convlens train ...` or `python -m convlens.cli train ...`)",
                        param="devices")
    if _several(devices, num_nodes):  # Fabric's banner, once per process: the run's own line says it once
        logging.getLogger("lightning_fabric").setLevel(logging.WARNING)
    con = out_console(as_json)
    options = dict(patience=patience or None, stop_at=stop_at, accelerator=accelerator, devices=dev,
                   num_nodes=num_nodes, strategy=strategy, precision=precision)
    if resume is not None:  # only what the command line gives: the rest is the run's recorded options
        options = {k: v for k, v in options.items() if _from_command_line(ctx, k)}
    else:
        options.update(label=label, scale=scale if data.startswith("cmu-faces") else None, augment=augment,
                       epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, out=out, force=force, preview=preview,
                       weight_decay=weight_decay, schedule=schedule, val=val, test=test, freeze=freeze,
                       freeze_until=freeze_until, size=size, finetune_epochs=finetune_epochs)
    if resume is not None:
        options.update(resume=resume)

    def terminate(_signum, _frame):  # SIGTERM ends training as Ctrl-C does: the best epoch so far is kept
        raise KeyboardInterrupt

    in_main = threading.current_thread() is threading.main_thread()  # only there can a handler be set
    previous = signal.signal(signal.SIGTERM, terminate) if in_main else None
    try:
        run = train(data, arch=arch, console=con, **options)
    except KeyboardInterrupt:
        if global_rank() != 0:
            raise typer.Exit(0) from None  # see below
        raise
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    interrupted = run.metrics.get("stopped") == "interrupted"
    if global_rank() != 0:
        # the other processes of a data-parallel run: process 0 speaks (and exits 130) for them; they end
        # with 0 even when interrupted, since Fabric's launcher kills process 0 as soon as one of the
        # processes it started ends otherwise, maybe while process 0 writes the run
        raise typer.Exit(0)
    if interrupted:
        err_console.print(f"convlens: interrupted after {run.metrics.get('epochs_run')} epoch(s); the best so far "
                          f"is in {run.path} (convlens evaluate {run.path}; continue with "
                          f"convlens train --resume {run.path})", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(130)
    if as_json:
        emit_json({"run": str(run.path), "metrics": run.metrics})
    else:
        m = run.metrics
        if "accuracy" in m:
            con.print(f"test accuracy {m['accuracy']:.4f}, balanced {m['balanced_accuracy']:.4f}, "
                      f"macro F1 {m['macro_f1']:.4f} on {m['n_test']} images", highlight=False)
        con.print(f"run written to {run.path} (convlens evaluate {run.path})", highlight=False)
