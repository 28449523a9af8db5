"""The processes of a launch: every `ke` command that runs in parallel joins them here, whatever started it.

torchrun, `accelerate launch --multi_gpu` (which runs torchrun) and mpirun tell each process its place through the
environment (WORLD_SIZE / RANK / MASTER_ADDR, or MPI's variables). accelerate's PartialState joins their process
group, but on a machine without a GPU only when told to use the CPU (ACCELERATE_USE_CPU); otherwise every process
would run the whole job alone. `state` tells it so, and refuses in one sentence a launch whose processes cannot or
did not join (so work is never done twice).
"""
from __future__ import annotations

import os

from .errors import UserError

WORLD_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")  # as accelerate reads them


def launched_processes() -> int:
    """How many processes the launcher says it started (1 without a launcher)."""
    for name in WORLD_VARIABLES:
        if os.environ.get(name):
            return int(os.environ[name])
    return 1


def state():
    """accelerate's PartialState of this process, joined to the process group of its launch: nccl (or the
    device's backend) with GPUs, gloo without."""
    import torch
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    world = launched_processes()
    if world == 1 and "ACCELERATE_USE_CPU" in os.environ and "MASTER_PORT" in os.environ:
        # accelerate's plain launcher (with --cpu, or without --multi_gpu) sets MASTER_PORT when asked for several
        # processes, yet starts only this one.
        raise UserError("`accelerate launch --cpu` (or without --multi_gpu) started one process whatever "
                        "--num_processes says; launch N processes with `torchrun --nproc_per_node N -m ke.cli ...` "
                        "or `accelerate launch --multi_gpu --num_processes N -m ke.cli ...`, or launch just one.")
    if os.environ.get("WORLD_SIZE") and world > 1 and not (os.environ.get("RANK") and os.environ.get("MASTER_ADDR")):
        raise UserError(f"WORLD_SIZE is {world} but RANK or MASTER_ADDR is not set, so this process cannot find the "
                        "others; start the processes with torchrun or `accelerate launch --multi_gpu`, or unset "
                        "WORLD_SIZE.")
    # FSDP is left to accelerate's own choice: it shards only over accelerator devices.
    cpu = parse_flag_from_env("ACCELERATE_USE_CPU") or (
        world > 1 and not torch.cuda.is_available() and not parse_flag_from_env("ACCELERATE_USE_FSDP"))
    joined = PartialState(cpu=cpu)
    if joined.num_processes != world:
        raise UserError(f"this process was launched as one of {world} (WORLD_SIZE) but joined a group of "
                        f"{joined.num_processes} ({joined.distributed_type}); launch with torchrun or `accelerate "
                        "launch --multi_gpu`, or on GPUs for a sharded (FSDP) run.")
    return joined
