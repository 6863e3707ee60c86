"""``convlens train``: train a classifier into a run directory."""

from __future__ import annotations

from typing import Optional

import typer

from . import app
from .common import JsonOpt, check_out_dir, emit_json, err_console, out_console

#: convlens.train.arch.DEFAULT_ARCH, repeated so that `convlens --help` does not import torch (a test checks they agree)
DEFAULT_ARCH = "conv16-bn-pool-conv32-bn-pool-conv64-bn-pool-fc128-bn-drop0.3"


@app.command("train")
def train_cmd(
    data: str = typer.Option(..., "--data", help="folder:PATH, cmu-faces:PATH, mnist:PATH, fashion-mnist:PATH or digits."),
    out: str = typer.Option(..., "--out", "-o", help="The run directory to write (refused if it exists, unless --force)."),
    label: Optional[str] = typer.Option(None, "--label", help="cmu-faces label: identity, eyes, pose or expression."),
    scale: int = typer.Option(2, "--scale", help="cmu-faces scale: 1 (128x120), 2 (64x60) or 4 (32x30)."),
    arch: str = typer.Option(DEFAULT_ARCH, "--arch",
                             help="A CNN spec like conv32-pool-conv64-pool-fc128-drop0.2, or effnet-lite0, timm:NAME."),
    augment: Optional[str] = typer.Option(None, "--augment", help="e.g. rotate=15,translate=0.1,zoom=0.1,flip=h (training split only)."),
    epochs: int = typer.Option(40, "--epochs"),
    batch_size: int = typer.Option(32, "--batch-size"),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate (default 3e-3 for spec CNNs, 1e-3 for backbones)."),
    weight_decay: float = typer.Option(1e-4, "--weight-decay"),
    schedule: str = typer.Option("onecycle", "--schedule", help="onecycle, cosine or constant."),
    seed: int = typer.Option(0, "--seed"),
    val: float = typer.Option(0.1, "--val", help="Validation fraction."),
    test: float = typer.Option(0.2, "--test", help="Test fraction (ignored when the source has its own test split)."),
    patience: int = typer.Option(15, "--patience", help="Early stopping on validation loss; 0 turns it off."),
    stop_at: Optional[str] = typer.Option(None, "--stop-at", help="Stop at a goal, e.g. accuracy=0.99 (validation)."),
    freeze: bool = typer.Option(False, "--freeze", help="Train the new head only (features computed once)."),
    freeze_until: Optional[str] = typer.Option(None, "--freeze-until", help="Freeze this layer and every layer before it "
                                               "(names as `convlens layers` lists them, e.g. features.conv1)."),
    size: Optional[str] = typer.Option(None, "--size", help="Train on copies resized to WxH, e.g. 32x30 "
                                       "(width x height, as --scale and summaries)."),
    finetune_epochs: int = typer.Option(0, "--finetune-epochs", help="Then fine-tune everything for N epochs at a lower rate."),
    accelerator: str = typer.Option("cpu", "--accelerator", help="Lightning Fabric accelerator: cpu, cuda, gpu, mps, auto."),
    devices: str = typer.Option("1", "--devices", help="Lightning Fabric devices (a count, a list, or auto)."),
    precision: str = typer.Option("32-true", "--precision", help="Lightning Fabric precision, e.g. bf16-mixed."),
    preview: bool = typer.Option(False, "--preview", help="Also write augment_preview.png (3x3 augmented copies of one training image) into the run."),
    force: bool = typer.Option(False, "--force", help="Replace an existing run directory."),
    as_json: bool = JsonOpt,
) -> None:
    """Train a CNN (from a one-line spec or a pretrained backbone) and write a run directory."""
    import signal
    import threading

    from ..train import train

    check_out_dir(out)
    con = out_console(as_json)
    dev: int | str = int(devices) if devices.isdigit() else devices

    def terminate(_signum, _frame):  # SIGTERM ends training as Ctrl-C does: the best epoch so far is kept
        raise KeyboardInterrupt

    in_main = threading.current_thread() is threading.main_thread()  # only there can a handler be set
    previous = signal.signal(signal.SIGTERM, terminate) if in_main else None
    try:
        run = train(data, label=label, scale=scale if data.startswith("cmu-faces") else None, arch=arch,
                    augment=augment, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, out=out, force=force,
                    console=con, preview=preview, weight_decay=weight_decay, schedule=schedule, val=val, test=test,
                    patience=patience or None, stop_at=stop_at, freeze=freeze, freeze_until=freeze_until, size=size,
                    finetune_epochs=finetune_epochs,
                    accelerator=accelerator, devices=dev, precision=precision)
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    if run.metrics.get("stopped") == "interrupted":
        err_console.print(f"convlens: interrupted after {run.metrics.get('epochs_run')} epoch(s); the best so far "
                          f"is in {run.path} (convlens evaluate {run.path})", highlight=False, markup=False,
                          soft_wrap=True)
        raise typer.Exit(130)
    if as_json:
        emit_json({"run": str(run.path), "metrics": run.metrics})
    else:
        m = run.metrics
        if "accuracy" in m:
            con.print(f"test accuracy {m['accuracy']:.4f}, balanced {m['balanced_accuracy']:.4f}, "
                      f"macro F1 {m['macro_f1']:.4f} on {m['n_test']} images", highlight=False)
        con.print(f"run written to {run.path} (convlens evaluate {run.path})", highlight=False)
