"""More than one process: data-parallel training with torchrun and DistributedDataParallel (DDP).

    torchrun --nproc_per_node 4 -m pets.run --data pets --arch resnet34      # 4 GPUs, one machine

torchrun starts one process per GPU (or per CPU share) and tells each its RANK, LOCAL_RANK and WORLD_SIZE
in the environment; init_distributed joins them into a process group (NCCL between GPUs, gloo on CPUs).
Then, inside learn.distrib_ctx():

- each process trains on its own shard of every epoch's shuffled order (all draw the same order from the
  same seed, rank r takes items r, r + N, r + 2N, ...; the order is padded so that every shard has the
  same number of batches, since DDP needs every process at every step). A training loader without a seed
  would draw from each process's own global generator, so inside the context it draws from a generator
  seeded by rank 0;
- DDP averages the gradients over the processes after each backward pass, so all copies of the model
  take the same step: one step on a batch of bs x N images. The batch size is per process. The epoch's
  loop runs in DDP's join(), so a process left with fewer batches (unreadable files) does not stall the
  others; each process draws its own augmentation and dropout (pets.run seeds it with seed + rank);
- after each epoch, BatchNorm's running statistics are averaged over the processes, so that all copies
  of the model are equal, buffers included;
- validation is sharded the same way without padding, and the outputs are gathered back into the
  validation set's order, so every process computes the metrics of the whole set, as one process would;
- only rank 0 prints, writes checkpoints and files.
"""
import contextlib
import os

import torch
import torch.distributed as dist
import torch.nn as nn


def world_size():
    """The number of processes of this run (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank():
    """This process's index in the run (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def launched_by_torchrun():
    """True in a process torchrun started alongside others (WORLD_SIZE > 1 in the environment)."""
    return int(os.environ.get('WORLD_SIZE', '1')) > 1


def init_distributed(device=None):
    """Joins the process group torchrun describes in the environment; returns this process's device.

    device: 'cpu' to train on CPUs (gloo); default: this process's GPU, cuda:LOCAL_RANK (NCCL), if any.
    """
    local_rank = int(os.environ.get('LOCAL_RANK', '0'))
    use_gpu = torch.cuda.is_available() and (device is None or torch.device(device).type == 'cuda')
    if use_gpu:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group('nccl' if use_gpu else 'gloo')
    return torch.device('cuda', local_rank) if use_gpu else torch.device('cpu')


def processes_per_machine():
    """How many processes torchrun started on this machine."""
    return int(os.environ.get('LOCAL_WORLD_SIZE', '1'))


def all_gather(value):
    """[every process's value], in rank order (any picklable value; [value] when not distributed)."""
    if world_size() == 1:
        return [value]
    values = [None] * world_size()
    dist.all_gather_object(values, value)
    return values


def broadcast(value):
    """Rank 0's value, in every process (the value itself when not distributed)."""
    if world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_in_order(outputs, targets, positions=None):
    """Every process's (outputs, targets, positions) of its validation shard, put back into the set's order.

    With positions (each row's dataset index) the rows are sorted by them: exact, even where a process left
    out an unreadable file. Without, shard r holds items r, r + N, r + 2N, ... (see EpochSampler), so item i
    is row i // N of shard i % N; if the shards no longer follow that pattern they are concatenated, which
    keeps the metrics right but not the order."""
    parts = all_gather(tuple(None if t is None else t.cpu() for t in (outputs, targets, positions)))
    n = sum(len(p[0]) for p in parts)
    count = len(parts)
    if positions is not None:
        order = torch.cat([p[2] for p in parts]).argsort(stable=True)
    elif all(len(p[0]) == len(range(r, n, count)) for r, p in enumerate(parts)):
        order = torch.cat([torch.arange(r, n, count) for r in range(count)]).argsort()
    else:
        order = torch.arange(n)
    gathered = lambda i, device: torch.cat([p[i] for p in parts])[order].to(device)
    return (gathered(0, outputs.device), None if targets is None else gathered(1, targets.device),
            None if positions is None else gathered(2, 'cpu'))


@contextlib.contextmanager
def local_rank_zero_first():
    """On each machine, local rank 0 runs the block first (a download, say), the machine's other
    processes once every local rank 0 is done; so the work happens once per machine."""
    first = int(os.environ.get('LOCAL_RANK', '0')) == 0
    if world_size() > 1 and not first:
        dist.barrier()
    yield
    if world_size() > 1 and first:
        dist.barrier()


def average_buffers(model):
    """Each floating-point buffer (BatchNorm's running statistics) set to its mean over the processes.

    DDP copies rank 0's buffers to the others before each forward pass, but after the last one of an
    epoch each process has updated its own from its own batch; averaging makes the copies equal again
    (what validation and the saved model need), and the statistics then see every process's data."""
    for buffer in model.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer)
            buffer.div_(world_size())


def all_reduce_sum(values, device):
    """values (a list of numbers) summed over all processes."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


class DistributedTrainer:
    """Callback that distrib_ctx adds: training data-parallel under DistributedDataParallel.

    before_fit wraps the model (after any freezing: DDP reduces the gradients of the parameters that train
    when it wraps); each epoch's batches run inside DDP's join(), so that a process that runs out of batches
    first (its shard lost a whole batch to unreadable files) stands in for the others' gradient exchanges
    instead of leaving them waiting; after_train sums the training loss over every shard and averages the
    BatchNorm statistics (average_buffers). Validation gathers every shard (pets.inference.model_outputs).
    """

    def before_fit(self, learn):
        learn.ddp = wrap(learn.model, learn.dls.device)

    def before_train(self, learn):
        self.joined = learn.ddp.join()
        self.joined.__enter__()

    def after_train(self, learn):
        self.joined.__exit__(None, None, None)
        recorder = learn.recorder
        recorder.total, recorder.count = all_reduce_sum([recorder.total, recorder.count], learn.dls.device)
        average_buffers(learn.model)


@contextlib.contextmanager
def distrib_ctx(learn, sync_bn=False):
    """learn trains data-parallel inside the block (see the module docstring); outside it, alone again.

    sync_bn: BatchNorm statistics computed over all processes' batches (SyncBatchNorm), for small
    per-process batches. GPUs only: torch's SyncBatchNorm has no CPU kernel.
    """
    created = False
    if not dist.is_initialized():
        if not launched_by_torchrun():
            yield learn  # a single process: nothing to distribute, as fastai's distrib_ctx
            return
        init_distributed(learn.dls.device)
        created = True
    if sync_bn:
        if learn.dls.device.type != 'cuda':
            raise ValueError("sync_bn needs GPUs: torch's SyncBatchNorm has no CPU kernel (leave --sync-bn out)")
        learn.use_sync_batchnorm()
    loaders = (learn.dls.train, learn.dls.valid)
    for loader, pad in zip(loaders, (True, False)):
        loader.shard(rank(), world_size(), pad=pad)
    unseeded = learn.dls.train.generator is None
    if unseeded:  # the same order in every process, drawn from rank 0's global generator
        learn.dls.train.use_generator(torch.Generator().manual_seed(broadcast(int(torch.randint(0, 2**62, ())))))
    trainer = DistributedTrainer()
    learn.distributed = True
    learn.add_cb(trainer)
    try:
        yield learn
    finally:
        learn.remove_cb(trainer)
        learn.distributed, learn.ddp = False, None
        for loader in loaders:
            loader.shard(0, 1)
        if unseeded:
            learn.dls.train.use_generator(None)
        if created:
            dist.destroy_process_group()


def wrap(model, device):
    """model in DistributedDataParallel over the parameters that train now (so re-wrap after (un)freezing)."""
    if device.type != 'cuda':
        return nn.parallel.DistributedDataParallel(model)
    index = device.index if device.index is not None else torch.cuda.current_device()  # 'cuda': this process's
    return nn.parallel.DistributedDataParallel(model, device_ids=[index])
