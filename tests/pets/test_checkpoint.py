"""Checkpoints: atomic writes, exact resume after SIGKILL, refusal of a checkpoint made for another run."""
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from pets.augment import aug_transforms
from pets.checkpoint import CheckpointMismatchError, SaveCheckpoint, atomic_save, load_checkpoint, restore_checkpoint
from pets.data.block import DataBlock
from pets.data.images import Resize
from pets.data.items import RandomSplitter, RegexLabeller, get_image_files, using_attr
from pets.learner import cnn_learner
from pets.metrics import error_rate


def make_learner(folder, checkpoint, size=32, arch='resnet18', pattern=r'(.+)_\d+.jpg$', aug_seed=None):
    """The same learner each call: seeds fixed (aug_seed: the augmentation's own generator, else torch's)."""
    torch.manual_seed(0)
    block = DataBlock(get_items=get_image_files, splitter=RandomSplitter(valid_pct=0.25, seed=0),
                      get_y=using_attr(RegexLabeller(pattern), 'name'), item_tfms=Resize(40),
                      batch_tfms=aug_transforms(size=size, min_scale=0.75, seed=aug_seed))
    dls = block.dataloaders(folder, bs=6, num_workers=0, device='cpu')
    return cnn_learner(dls, arch, metrics=error_rate, pretrained=False, progress=False,
                       cbs=SaveCheckpoint(checkpoint))


# Run in a fresh process: fine_tune(2, freeze_epochs=2), SIGKILLed by its own callback at the given
# (fit call, epoch, batch), i.e. in the middle of an epoch, so that nothing gets to clean up.
SCRIPT = """
import os, signal, sys, torch
sys.path.insert(0, {tests!r})
from test_checkpoint import make_learner

class KillAt:
    def __init__(self):
        self.batch = 0
    def after_batch(self, learn):
        self.batch += 1
        if {kill!r} == (learn.fit_count - 1, learn.epoch, self.batch):
            os.kill(os.getpid(), signal.SIGKILL)
    def after_epoch(self, learn):
        self.batch = 0

torch.use_deterministic_algorithms(True)
learn = make_learner({folder!r}, {checkpoint!r}).to_precision({precision!r})
learn.add_cb(KillAt())
learn.fine_tune(2, base_lr=1e-2, freeze_epochs=2, resume={resume!r})
torch.save(learn.model.state_dict(), {weights!r})
torch.save(learn.recorder.values, {weights!r} + '.values')
"""


def run_script(tmp_path, pet_folder, name, kill=None, resume=False, precision='fp32'):
    weights, checkpoint = str(tmp_path / f'{name}.pth'), str(tmp_path / f'{name}-checkpoint.pth')
    code = SCRIPT.format(tests=os.path.dirname(__file__), folder=str(pet_folder), checkpoint=checkpoint,
                         kill=kill, resume=resume, weights=weights, precision=precision)
    return subprocess.run([sys.executable, '-c', textwrap.dedent(code)], capture_output=True, text=True,
                          env={**os.environ, 'OMP_NUM_THREADS': '1'}), weights, checkpoint


@pytest.mark.parametrize('precision', ['fp32', 'bf16'])
def test_a_run_killed_mid_epoch_resumes_to_the_same_weights(tmp_path, pet_folder, precision):
    straight, straight_weights, _ = run_script(tmp_path, pet_folder, 'straight', precision=precision)
    assert straight.returncode == 0, straight.stderr
    # Killed in the second batch of the unfrozen phase's second epoch (fit call 1, epoch 1)...
    killed, weights, checkpoint = run_script(tmp_path, pet_folder, 'resumed', kill=(1, 1, 2), precision=precision)
    assert killed.returncode == -signal.SIGKILL
    saved = torch.load(checkpoint, weights_only=True)
    assert saved['progress'] == {'fit_index': 1, 'epoch': 0, 'n_epoch': 2, 'step': 3}  # the last epoch that ended
    assert not [f for f in os.listdir(tmp_path) if f.endswith('.tmp')]
    # ...then resumed: the same weights and table as the run that was never interrupted.
    resumed, _, _ = run_script(tmp_path, pet_folder, 'resumed', resume=True, precision=precision)
    assert resumed.returncode == 0, resumed.stderr
    expected, got = torch.load(straight_weights), torch.load(weights)
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert torch.load(straight_weights + '.values') == torch.load(weights + '.values')


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path, pet_folder):
    checkpoint = tmp_path / 'checkpoint.pth'
    learn = make_learner(pet_folder, checkpoint)
    learn.fit_one_cycle(1, 1e-3)
    with pytest.raises(CheckpointMismatchError, match=r'image size: \[32, 32\] in the checkpoint, \[48, 48\] now'):
        make_learner(pet_folder, checkpoint, size=48).resume_from()
    with pytest.raises(CheckpointMismatchError, match='precision: fp32 in the checkpoint, bf16 now'):
        make_learner(pet_folder, checkpoint).to_bf16().resume_from()
    with pytest.raises(CheckpointMismatchError, match='architecture: resnet18 in the checkpoint, resnet34 now'):
        make_learner(pet_folder, checkpoint, arch='resnet34').resume_from()
    with pytest.raises(CheckpointMismatchError, match=r"vocabulary: .* new: \['A', 'g'\]; gone: \['Abyssinian'"):
        make_learner(pet_folder, checkpoint, pattern=r'(beagle|[^b]).*.jpg$').resume_from()
    (pet_folder / 'beagle_0.jpg').rename(pet_folder / 'beagle_100.jpg')
    with pytest.raises(CheckpointMismatchError, match=r'files: 1 added, 1 removed \(e.g. \+beagle_100.jpg'):
        make_learner(pet_folder, checkpoint).resume_from()
    (pet_folder / 'beagle_100.jpg').rename(pet_folder / 'beagle_0.jpg')
    moved = pet_folder.rename(tmp_path / 'moved')  # the same files elsewhere: the checkpoint still fits
    make_learner(moved, checkpoint).resume_from()


def test_a_seeded_augmentation_resumes_its_own_draws(tmp_path, pet_folder):
    """aug_transforms(seed=...) draws from a generator of its own: the checkpoint keeps its state, so the
    resumed run draws what the uninterrupted one drew next, not the seed's first draws again."""
    checkpoint = tmp_path / 'checkpoint.pth'
    learn = make_learner(pet_folder, checkpoint, aug_seed=3)
    learn.fit_one_cycle(1, 1e-3)
    after_one_epoch = learn.dls.train.batch_tfms[0].generator.get_state()
    resumed = make_learner(pet_folder, checkpoint, aug_seed=3)
    augmentation = resumed.dls.train.batch_tfms[0]
    assert not torch.equal(augmentation.generator.get_state(), after_one_epoch)  # a fresh one starts at its seed
    resumed.create_opt()
    restore_checkpoint(resumed, load_checkpoint(resumed, checkpoint))
    assert torch.equal(augmentation.generator.get_state(), after_one_epoch)


def test_resume_without_a_checkpoint_says_so(tmp_path, pet_folder):
    learn = make_learner(pet_folder, tmp_path / 'none.pth')
    with pytest.raises(FileNotFoundError, match='no checkpoint at .*none.pth: there is nothing to resume'):
        learn.fit_one_cycle(1, resume=True)


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / 'state.pth'
    atomic_save({'step': 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError('disk full')

    with pytest.raises(RuntimeError, match='disk full'):
        atomic_save({'step': 2, 'bad': Unpicklable()}, path)
    assert torch.load(path) == {'step': 1}
    assert os.listdir(tmp_path) == ['state.pth']
