"""Data-parallel training with torch.distributed: gloo on CPU, nccl on GPUs.

Two ways to launch, same result (rank 0 writes the run folder):

    strato train --dataset digits --model mlp --nproc 2 --out runs/ddp
    torchrun --standalone --nproc-per-node 2 "$(command -v strato)" train \\
        --dataset digits --model mlp --out runs/ddp

`--nproc N` spawns N local processes that meet through a file store (no port to pick); under
`torchrun` each process reads RANK / WORLD_SIZE / LOCAL_RANK and meets through `env://`.
`--batch-size` is the global batch: every rank takes its share of each global batch, and DDP
averages the gradients, so N processes follow the same optimisation as one process.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from strato import StratoError
from torch.multiprocessing.spawn import ProcessRaisedException, spawn
from torch.nn.parallel import DistributedDataParallel

from strato_training.loop import check_model, fit, warn_if_tiny
from strato_training.models import build_model
from strato_training.runs import TrainResult, dataset_for, load_run, resolve_device, save_run

if TYPE_CHECKING:
    from strato_training.data import Dataset
    from strato_training.runs import TrainConfig

__all__ = ["TORCHRUN_EXAMPLE", "launched_by_torchrun", "train_distributed"]


TORCHRUN_EXAMPLE = (
    'torchrun --standalone --nproc-per-node 2 "$(command -v strato)" train '
    "--dataset digits --model mlp --out runs/ddp"
)


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def train_distributed(
    config: TrainConfig,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    dataset: Dataset | None = None,
) -> TrainResult:
    """Train over `config.nproc` spawned processes (or as one rank of a torchrun launch).

    `dataset` (loaded here when not given) is handed to every spawned rank.
    """
    if launched_by_torchrun():
        return _torchrun_rank(config, out_dir, progress)
    # Fail fast, in this process, on a bad dataset or model spec before spawning anything.
    dataset = dataset or dataset_for(config)
    model = build_model(
        config.model, input_shape=dataset.input_shape, num_classes=dataset.num_classes
    )
    check_model(model, dataset, config, device=torch.device("cpu"))
    warn_if_tiny(dataset, config)
    resolve_device(config.device)
    run_dir = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="strato-ddp-"))
    store = tempfile.mkdtemp(prefix="strato-rendezvous-")
    try:
        spawn(  # type: ignore[no-untyped-call]
            _spawned_rank,
            args=(config, dataset, f"file://{store}/store", str(run_dir), progress),
            nprocs=config.nproc,
            join=True,
        )
        result = load_run(run_dir)
    except ProcessRaisedException as exc:
        raise StratoError(f"distributed training failed in a worker process:\n{exc}") from exc
    finally:
        shutil.rmtree(store, ignore_errors=True)
        if out_dir is None:
            shutil.rmtree(run_dir, ignore_errors=True)
    if out_dir is None:
        result.run_dir = None
    return result


def _backend(config: TrainConfig) -> str:
    return "nccl" if resolve_device(config.device).type == "cuda" else "gloo"


def _spawned_rank(
    rank: int,
    config: TrainConfig,
    dataset: Dataset,
    init_method: str,
    run_dir: str,
    progress: bool,
) -> None:
    dist.init_process_group(
        _backend(config), init_method=init_method, rank=rank, world_size=config.nproc
    )
    try:
        result = _fit_rank(config, dataset, rank, rank, config.nproc, progress)
        if rank == 0:
            save_run(result, run_dir)
        dist.barrier()
    except BaseException:
        dist.destroy_process_group()
        raise
    # The run is saved and every rank is past the barrier. Leave without gloo's destructors:
    # on CPU they aborted a rank now and then at exit ("terminate called without an active
    # exception", about 1 run in 6 with --nproc 2 here), failing a finished run.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _torchrun_rank(
    config: TrainConfig, out_dir: str | os.PathLike[str] | None, progress: bool
) -> TrainResult:
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    dist.init_process_group(_backend(config), init_method="env://")
    try:
        result = _fit_rank(config, dataset_for(config), rank, local_rank, world_size, progress)
        if rank == 0 and out_dir is not None:
            save_run(result, out_dir)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    result.rank = rank
    return result


def _fit_rank(
    config: TrainConfig,
    dataset: Dataset,
    rank: int,
    local_rank: int,
    world_size: int,
    progress: bool,
) -> TrainResult:
    device = resolve_device(config.device)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        # Share the cores: N ranks each using every core would thrash.
        torch.set_num_threads(config.threads or max(1, (os.cpu_count() or 1) // world_size))
    torch.manual_seed(config.seed)
    model = build_model(
        config.model, input_shape=dataset.input_shape, num_classes=dataset.num_classes
    ).to(device)
    parallel = DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )

    def reduce(totals: torch.Tensor) -> torch.Tensor:
        moved = totals.to(device)
        dist.all_reduce(moved)
        return moved.cpu()

    return fit(
        parallel,
        dataset,
        config,
        device=device,
        rank=rank,
        world_size=world_size,
        reduce=reduce,
        progress=progress,
    )
