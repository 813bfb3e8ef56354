"""Data-parallel training: torchrun with 2 CPU processes (gloo), against one process on the same weights."""
import ast
import csv
import os
import subprocess
import sys

import pytest
import torch

from pets.data.loader import EpochSampler
from pets.run import UserError, build_learner, main, parse_args

SMALL = ['--arch', 'resnet18', '--no-pretrained', '--bs', '6', '--presize', '40', '--size', '32', '--workers', '0']


TWO_GPUS = pytest.mark.skipif(torch.cuda.device_count() < 2, reason='needs 2 CUDA GPUs')


def torchrun(*arguments, timeout=600):
    """torchrun with 2 processes on this machine, running arguments (a script or -m module, then its options)."""
    return subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
                           *arguments], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, 'OMP_NUM_THREADS': '1'})


def test_shards_split_each_epoch_between_the_processes():
    def epoch(rank, world_size, pad, seed=3):
        sampler = EpochSampler(11, shuffle=True, generator=torch.Generator().manual_seed(seed))
        sampler.shard(rank, world_size, pad)
        return list(sampler), len(sampler)

    whole, _ = epoch(0, 1, False)
    padded = [epoch(r, 3, True) for r in range(3)]
    assert all(n == 4 and len(pairs) == 4 for pairs, n in padded)  # equal shares: 11 items padded to 12
    assert sorted(p for pairs, _ in padded for p in pairs) == sorted(whole + whole[:1])
    exact = [epoch(r, 3, False)[0] for r in range(3)]
    assert [len(pairs) for pairs in exact] == [4, 4, 3] and sorted(sum(exact, [])) == sorted(whole)


def test_a_shard_drops_its_last_partial_batch_only_when_it_has_a_full_one(pet_folder):
    args = parse_args(['--data', str(pet_folder), *SMALL])
    learn, _, _ = build_learner(args, pet_folder.parent / 'out', ())
    train = learn.dls.train  # 20 images, batches of 6
    train.shard(1, 2, pad=True)  # 10 images: one full batch, the partial one dropped
    assert len(train) == 1 and [len(y) for _, y in train] == [6]
    train.shard(2, 5, pad=True)  # 4 images: no full batch, so the partial one is kept
    assert len(train) == 1 and [len(y) for _, y in train] == [4]
    train.shard(0, 1)
    assert len(train) == 3


def test_torchrun_with_two_gloo_processes_validates_as_one_process_would(pet_folder, tmp_path):
    options = ['--data', str(pet_folder), *SMALL, '--freeze-epochs', '1', '--epochs', '1', '--device', 'cpu']
    done = torchrun('-m', 'pets.run', *options, '--out', str(tmp_path / 'ddp'))
    assert done.returncode == 0, done.stderr[-3000:]
    assert '20 training and 4 validation images, 3 classes' in done.stdout
    assert '2 processes of batch size 6' in done.stdout
    assert done.stdout.count('final error rate') == 1  # rank 0 alone prints
    with open(tmp_path / 'ddp' / 'history.csv') as file:
        last = list(csv.DictReader(file))[-1]

    # One process, the same data and split, the weights the two processes ended with.
    learn, _, _ = build_learner(parse_args([*options, '--out', str(tmp_path / 'single')]), tmp_path / 'single', ())
    learn.model.load_state_dict(torch.load(tmp_path / 'ddp' / 'model.pth', weights_only=True)['state_dict'])
    valid_loss, error = learn.validate()
    assert float(last['valid_loss']) == pytest.approx(valid_loss, rel=1e-6)
    assert float(last['error_rate']) == error


KILLED_RANK_0 = """
import os, signal, sys
from pets.run import main

class KillAt:  # rank 0 SIGKILLs itself after the first of two batches of the second unfrozen epoch
    batch = 0
    def after_batch(self, learn):
        self.batch += 1
        if os.environ['RANK'] == '0' and (learn.fit_count, learn.epoch, self.batch) == (2, 1, 1):
            os.kill(os.getpid(), signal.SIGKILL)
    def after_epoch(self, learn):
        self.batch = 0

main(sys.argv[1:], cbs=[KillAt()])
"""


def test_a_distributed_run_killed_mid_epoch_resumes_to_the_uninterrupted_result(pet_folder, tmp_path):
    script = tmp_path / 'killed.py'
    script.write_text(KILLED_RANK_0)
    options = ['--data', str(pet_folder), *SMALL, '--bs', '4', '--freeze-epochs', '1', '--epochs', '3',
               '--device', 'cpu', '--deterministic']
    straight = torchrun('-m', 'pets.run', *options, '--out', str(tmp_path / 'straight'))
    assert straight.returncode == 0, straight.stderr[-3000:]
    killed = torchrun(str(script), *options, '--out', str(tmp_path / 'killed'))
    assert killed.returncode != 0  # torchrun stopped rank 1 when rank 0 died
    assert torch.load(tmp_path / 'killed' / 'checkpoint.pth')['progress'] == {
        'fit_index': 1, 'epoch': 0, 'n_epoch': 3, 'step': 2}
    with pytest.raises(UserError, match='processes: 2 in the checkpoint, 1 now'):
        main([*options, '--out', str(tmp_path / 'killed'), '--resume'])  # one process cannot take it over
    resumed = torchrun('-m', 'pets.run', *options, '--out', str(tmp_path / 'killed'), '--resume')
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert 'resuming after epoch 0 of training phase 2' in resumed.stdout
    assert (tmp_path / 'killed' / 'history.csv').read_text() == (tmp_path / 'straight' / 'history.csv').read_text()
    expected = torch.load(tmp_path / 'straight' / 'model.pth')['state_dict']
    got = torch.load(tmp_path / 'killed' / 'model.pth')['state_dict']
    assert all(torch.equal(expected[k], got[k]) for k in expected)


UNEVEN = """
import sys
from pathlib import Path
import torch
from pets.distributed import all_gather, init_distributed, rank
from pets.run import build_learner, parse_args

args = parse_args(sys.argv[1:])
args.device = str(init_distributed('cpu'))
torch.manual_seed(0)
learn, _, _ = build_learner(args, Path(args.out), ())
with learn.distrib_ctx():
    # Uneven shards, as when unreadable files cost one process a whole batch: 3 batches here, 2 there.
    learn.dls.train.shard(*((0, 2) if rank() == 0 else (1, 3)))
    batches = all_gather(len(learn.dls.train))
    learn.fit(2, lr=1e-3)
    sums = all_gather(sum(p.double().sum().item() for p in learn.model.parameters()))
    if rank() == 0:
        print('batches', batches, 'sums', sums, flush=True)
torch.distributed.destroy_process_group()  # before exit: gloo's threads must not outlive the interpreter
"""


def test_processes_with_uneven_batches_neither_hang_nor_drift_apart(pet_folder, tmp_path):
    script = tmp_path / 'uneven.py'
    script.write_text(UNEVEN)
    done = torchrun(str(script), '--data', str(pet_folder), *SMALL, '--bs', '3', '--out', str(tmp_path), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    line = [line for line in done.stdout.splitlines() if line.startswith('batches')][0]
    assert 'batches [3, 2]' in line
    first, second = ast.literal_eval(line.split('sums')[1].strip())
    assert first == second  # the copies of the model end equal


@TWO_GPUS
@pytest.mark.parametrize('sync_bn', [False, True])
def test_torchrun_with_two_gpus_trains_over_nccl(pet_folder, tmp_path, sync_bn):
    options = ['--data', str(pet_folder), *SMALL, '--freeze-epochs', '1', '--epochs', '1']
    done = torchrun('-m', 'pets.run', *options, *(['--sync-bn'] if sync_bn else []), '--out', str(tmp_path / 'nccl'))
    assert done.returncode == 0, done.stderr[-3000:]
    assert '2 processes of batch size 6' in done.stdout and done.stdout.count('final error rate') == 1
    with open(tmp_path / 'nccl' / 'history.csv') as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 2 and all(float(row['train_loss']) > 0 for row in rows)


UNSEEDED = """
import sys
from pathlib import Path
import torch
from pets.distributed import all_gather, init_distributed, rank
from pets.run import build_learner, parse_args

args = parse_args(sys.argv[1:])
args.device = str(init_distributed('cpu'))
torch.manual_seed(rank())  # each process its own global stream, as pets.run seeds seed + rank
learn, _, _ = build_learner(args, Path(args.out), ())
learn.dls.train.use_generator(None)  # a training loader made without a seed
with learn.distrib_ctx():
    shards = all_gather([index for index, _ in learn.dls.train.sampler])
assert learn.dls.train.generator is None  # as it was, outside the context
if rank() == 0:
    print('shards', shards, 'items', len(learn.dls.train_ds), flush=True)
torch.distributed.destroy_process_group()  # before exit: gloo's threads must not outlive the interpreter
"""


def test_an_unseeded_training_loader_is_sharded_from_one_order_drawn_on_rank_0(pet_folder, tmp_path):
    script = tmp_path / 'unseeded.py'
    script.write_text(UNSEEDED)
    done = torchrun(str(script), '--data', str(pet_folder), *SMALL, '--out', str(tmp_path), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    line = [line for line in done.stdout.splitlines() if line.startswith('shards')][0]
    first, second = ast.literal_eval(line.split('shards')[1].split('items')[0].strip())
    n_items = int(line.split('items')[1])
    assert len(first) == len(second) and set(first) | set(second) == set(range(n_items))  # every item, once
