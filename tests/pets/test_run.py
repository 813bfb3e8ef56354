"""python -m pets.run under stress: killed and resumed, repeated with a seed, fed bad files and bad options."""
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from pets.data.images import read_image
from pets.recipes import EPOCHS, FREEZE_EPOCHS
from pets.run import TrainingFailed, UserError, main

SMALL = ['--arch', 'resnet18', '--no-pretrained', '--bs', '6', '--presize', '40', '--size', '32', '--workers', '0']


def run_script(code, **env):
    return subprocess.run([sys.executable, '-c', textwrap.dedent(code)], capture_output=True, text=True,
                          env={**os.environ, 'OMP_NUM_THREADS': '1', **env})


KILLED_RUN = """
import os, signal
from pets.run import main

class KillAt:  # SIGKILL in the middle of an epoch: the third batch of the second unfrozen epoch
    batch = 0
    def after_batch(self, learn):
        self.batch += 1
        if (learn.fit_count, learn.epoch, self.batch) == (2, 1, 3):
            os.kill(os.getpid(), signal.SIGKILL)
    def after_epoch(self, learn):
        self.batch = 0

main({argv!r}, cbs=[KillAt()])
"""


def test_sigkill_then_resume_gives_the_uninterrupted_result_and_a_seed_repeats(pet_folder, tmp_path):
    options = ['--data', str(pet_folder), *SMALL, '--freeze-epochs', '2', '--epochs', '3', '--seed', '7',
               '--deterministic']
    outputs = {name: tmp_path / name for name in ('first', 'second', 'killed')}
    for name in ('first', 'second'):
        done = run_script(f"from pets.run import main; main({[*options, '--out', str(outputs[name])]!r})")
        assert done.returncode == 0, done.stderr
    killed = run_script(KILLED_RUN.format(argv=[*options, '--out', str(outputs['killed'])]))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    progress = torch.load(outputs['killed'] / 'checkpoint.pth')['progress']
    assert progress == {'fit_index': 1, 'epoch': 0, 'n_epoch': 3, 'step': 3}  # the last epoch that ended
    resume = [*options, '--out', str(outputs['killed']), '--resume']
    resumed = run_script(f"from pets.run import main; main({resume!r})")
    assert resumed.returncode == 0, resumed.stderr
    assert 'resuming after epoch 0 of training phase 2' in resumed.stdout

    def results(name):
        return (outputs[name] / 'history.csv').read_text(), torch.load(outputs[name] / 'model.pth')['state_dict']

    table, weights = results('first')
    assert table.count('\n') == 6
    for other in ('second', 'killed'):  # the same seed repeats; the resumed run ends where the straight one did
        other_table, other_weights = results(other)
        assert other_table == table
        assert all(torch.equal(weights[k], other_weights[k]) for k in weights)


def test_every_bad_file_is_loaded_or_left_out_with_a_line_and_training_completes(bad_input_corpus, tmp_path, capsys):
    folder, expected = bad_input_corpus
    main(['--data', str(folder), '--pattern', r'(.+)_\d+\.(jpg|png)$', *SMALL, '--freeze-epochs', '2', '--epochs', '1',
          '--out', str(tmp_path)])
    printed = capsys.readouterr().out
    report = (tmp_path / 'left_out.txt').read_text().splitlines()
    reported = {line.split('\t')[0].rsplit('/', 1)[-1]: line.split('\t')[1] for line in report}
    left_out = {name for name, outcome in expected.items() if outcome == 'left out'}
    assert set(reported) == left_out, report
    for name in left_out:
        assert name in reported[name]  # each reason names its file...
        assert printed.count(f"left out {folder / name}") == 1  # ...and is printed once, in one line
    assert 'the file is empty (0 bytes)' in reported['beagle_100.jpg']
    assert 'does not match --pattern' in reported['holiday.jpg'] and 'DecompressionBomb' in reported['pug_106.png']
    for name, outcome in expected.items():
        if outcome == 'loads':
            image = read_image(folder / name)
            assert image.dtype == torch.uint8 and image.shape[0] == 3 and min(image.shape[1:]) >= 1
    assert (tmp_path / 'history.csv').read_text().count('\n') == 4 and (tmp_path / 'model.pth').exists()


def test_user_errors_name_the_problem_and_the_fix(pet_folder, tmp_path):
    def fails(*options, match):
        with pytest.raises(UserError, match=match):
            main([*options, *SMALL, '--out', str(tmp_path / 'out')])

    (tmp_path / 'empty').mkdir()
    fails('--data', str(tmp_path / 'empty'), match='no image files in .*empty: is it the folder')
    fails('--data', str(tmp_path / 'nowhere'), match="no such folder; use 'sample', 'pets' or a folder")
    fails('--data', str(pet_folder), '--pattern', '(.+_', match="is not a regular expression .*missing \\)")
    fails('--data', str(pet_folder), '--pattern', r'.+_\d+.jpg$', match='has no group: put the label in parentheses')
    fails('--data', str(pet_folder), '--pattern', r'(cat)_\d+', match="labels none of the 24 files .*group 1 must")
    fails('--data', str(pet_folder), '--pattern', r'\.(jpg)$', match="finds one class only \\('jpg'\\)")
    fails('--data', str(pet_folder), '--resume', match='--resume: no checkpoint in .*out; run without --resume')
    fails('--data', str(pet_folder), '--sync-bn', '--device', 'cpu', match='--sync-bn needs GPUs')
    fails('--data', str(pet_folder), '--device', 'tpu9', match='--device tpu9: not a device; use cpu, cuda or cuda:N')
    if not torch.cuda.is_available():
        fails('--data', str(pet_folder), '--device', 'cuda',
              match='no CUDA GPU is visible to torch here; use --device cpu')
    with pytest.raises(SystemExit) as exit_:
        main(['--arch', 'resnet9000'])
    assert exit_.value.code == 2


@pytest.mark.parametrize('options, message', [
    (['--epochs', '-1'], 'argument --epochs: -1 is below 0: give 0 or more'),
    (['--tta', '-3'], 'argument --tta: -3 is below 0'),
    (['--size', '0'], 'argument --size: 0 is below 1'),
    (['--bs', 'six'], "argument --bs: 'six' is not a whole number"),
    (['--min-scale', '2'], "argument --min-scale: 2 is above 1: it is a share of the image's area"),
    (['--min-scale', '0'], 'argument --min-scale: 0 is not above 0'),
    (['--lr', '-1'], "argument --lr: '-1' is neither a number above 0 nor 'find'"),
    (['--lr-mult', '0'], 'argument --lr-mult: 0 is not above 0'),
    (['--label-smoothing', 'x'], "argument --label-smoothing: 'x' is not a number"),
    (['--epochs', '0', '--freeze-epochs', '0'], '--epochs and --freeze-epochs are both 0: nothing would train'),
    (['--crop-ratio', '1.3', '0.75'], '--crop-ratio 1.3 0.75: give the lower ratio first'),
    (['--crop-ratio', '0', '1'], 'argument --crop-ratio: 0 is not above 0'),
])
def test_nonsense_numbers_get_one_line_and_exit_code_2(options, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(options)
    assert exit_.value.code == 2
    last_line = capsys.readouterr().err.splitlines()[-1]
    assert last_line.startswith('python -m pets.run: error: ') and message in last_line


def test_help_shows_every_default(capsys):
    with pytest.raises(SystemExit):
        main(['--help'])
    text = ' '.join(capsys.readouterr().out.split())
    for default in (f"(default: the recipe's, {EPOCHS} for frozen-bn)",
                    f"(default: the recipe's, {FREEZE_EPOCHS} for frozen-bn)", '(default: efficientnet_lite0)',
                    '(default: 0.75)', '(default: frozen-bn)', '(default: pets-output)', '(default: 42)',
                    '(default: 224)'):
        assert default in text


def test_no_network_for_the_full_data_set_says_what_to_do(monkeypatch, tmp_path):
    import pets.run
    from pets.data.download import DownloadError

    def offline(url, *args, **kwargs):
        raise DownloadError(f"downloading {url} failed after 4 attempts (Name or service not known)")

    monkeypatch.setattr(pets.run, 'untar_data', offline)
    monkeypatch.setenv('PETS_DATA', str(tmp_path))
    with pytest.raises(UserError, match=r"--data pets: the download failed \(.*Name or service not known\)+\. "
                                        r"Connect to the internet .* or put the archive at .*oxford-iiit-pet\.tgz"):
        main(['--data', 'pets', '--out', str(tmp_path / 'out')])


def test_a_folder_per_class_is_labelled_by_its_folders(class_folders, pet_folder, tmp_path, capsys):
    main(['--data', str(class_folders), *SMALL, '--freeze-epochs', '1', '--epochs', '0', '--out', str(tmp_path / 'a')])
    out = capsys.readouterr().out
    assert '20 training and 4 validation images, 3 classes' in out and 'final error rate' in out
    with pytest.raises(UserError, match=r"finds one class only \('IMG'\) .* use --labels folder"):
        main(['--data', str(class_folders), '--labels', 'pattern', '--pattern', r'(.+)_\d+.jpg$', *SMALL,
              '--out', str(tmp_path / 'b')])
    with pytest.raises(UserError, match=r"--labels folder finds one class only \('images'\) .* a folder of its own"):
        main(['--data', str(pet_folder), '--labels', 'folder', *SMALL, '--out', str(tmp_path / 'c')])


def test_a_presize_below_the_size_warns_and_a_phase_of_no_epochs_prints_no_table(pet_folder, tmp_path, capsys):
    main(['--data', str(pet_folder), *SMALL, '--presize', '24', '--freeze-epochs', '0', '--epochs', '1',
          '--out', str(tmp_path / 'out')])
    captured = capsys.readouterr()
    assert 'warning: --presize 24 is below --size 32' in captured.err
    assert captured.out.count('train_loss') == 1  # one phase, one table


def test_the_command_line_exits_2_for_user_errors_and_1_for_a_failed_run_without_tracebacks(pet_folder, tmp_path):
    command = [sys.executable, '-m', 'pets.run', '--data', str(pet_folder), *SMALL, '--out', str(tmp_path)]
    bad_pattern = subprocess.run([*command, '--pattern', 'x'], capture_output=True, text=True)
    assert bad_pattern.returncode == 2 and 'Traceback' not in bad_pattern.stderr
    assert bad_pattern.stderr.startswith("error: --pattern 'x' has no group")
    diverged = subprocess.run([*command, '--lr', '1e30', '--freeze-epochs', '1', '--epochs', '1'],
                              capture_output=True, text=True)
    assert diverged.returncode == 1 and 'Traceback' not in diverged.stderr
    assert 'lower the learning rate' in diverged.stderr and 'no epoch had completed' in diverged.stderr


def test_ctrl_c_says_how_to_resume_and_keeps_the_checkpoint(pet_folder, tmp_path):
    command = [sys.executable, '-m', 'pets.run', '--data', str(pet_folder), *SMALL, '--freeze-epochs', '1',
               '--epochs', '200', '--out', str(tmp_path)]
    # A shell's background job starts with SIGINT ignored, and an ignored signal stays ignored in a child
    # (Python then installs no KeyboardInterrupt handler): the run would train on. A handler set here is
    # reset to the default in the child when it starts, so the child gets Ctrl-C as a terminal's would.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    checkpoint = tmp_path / 'checkpoint.pth'
    for _ in range(1200):  # wait (up to 2 min) until an epoch has been checkpointed
        if checkpoint.exists() or run.poll() is not None:
            break
        time.sleep(0.1)
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 130 and 'Traceback' not in stderr
    assert 'interrupted: the checkpoint of the last completed epoch' in stderr and '--resume' in stderr
    assert torch.load(checkpoint, weights_only=True)['progress']['epoch'] >= 0


class PoisonWeights:
    """Sets a weight to NaN after the first batch of the second training phase: the next loss is NaN."""

    def after_batch(self, learn):
        if learn.fit_count == 2 and learn.epoch == 0:
            with torch.no_grad():
                learn.groups[-1][-1].weight.fill_(math.nan)


def test_a_non_finite_loss_stops_at_its_step_and_the_last_good_checkpoint_stays(pet_folder, tmp_path):
    options = ['--data', str(pet_folder), *SMALL, '--freeze-epochs', '2', '--epochs', '1', '--out', str(tmp_path)]
    with pytest.raises(TrainingFailed, match=r"epoch 0, step 1: the loss became nan at learning rate .* lower the "
                                             r"learning rate .* checkpoint of the last completed epoch stays in"):
        main(options, cbs=[PoisonWeights()])
    saved = torch.load(tmp_path / 'checkpoint.pth', weights_only=True)
    assert saved['progress'] == {'fit_index': 0, 'epoch': 1, 'n_epoch': 2, 'step': 6}
    assert all(torch.isfinite(v).all() for v in saved['model'].values() if v.is_floating_point())
    with pytest.raises(UserError, match=r'image size: \[32, 32\] in the checkpoint, \[24, 24\] now'):
        main([*options, '--resume', '--size', '24'])


def test_run_trains_on_a_folder_and_writes_the_table(pet_folder, tmp_path, capsys):
    main(['--data', str(pet_folder), *SMALL, '--epochs', '1', '--freeze-epochs', '1', '--out', str(tmp_path / 'out')])
    out = capsys.readouterr().out
    assert 'final error rate' in out and 'most confused' in out
    assert (tmp_path / 'out' / 'history.csv').read_text().count('\n') == 3
    assert {p.name for p in (tmp_path / 'out').iterdir()} == {
        'history.csv', 'history.md', 'loss.png', 'schedule.png', 'confusion_matrix.png', 'top_losses.png', 'batch.png',
        'model.pth', 'checkpoint.pth', 'left_out.txt'}


def test_run_with_lr_find_and_fp16(pet_folder, tmp_path, capsys):
    main(['--data', str(pet_folder), *SMALL, '--epochs', '1', '--freeze-epochs', '1', '--lr', 'find', '--fp16',
          '--out', str(tmp_path)])
    out = capsys.readouterr().out
    assert 'lr_find suggests' in out and (tmp_path / 'lr_find.png').exists()
    assert 'precision bf16 on cpu (asked for fp16, which a CPU runs as bfloat16' in out


def test_run_says_which_precision_it_chose_and_refuses_others(pet_folder, tmp_path, capsys):
    learn = main(['--data', str(pet_folder), *SMALL, '--epochs', '0', '--freeze-epochs', '1', '--precision', 'fp32',
                  '--out', str(tmp_path)])
    assert learn.precision == 'fp32' and 'precision fp32 on cpu (asked for)' in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(['--precision', 'half'])
    assert "--precision: invalid choice: 'half'" in capsys.readouterr().err


def test_run_with_label_smoothing_and_test_time_augmentation(pet_folder, tmp_path, capsys):
    learn = main(['--data', str(pet_folder), *SMALL, '--epochs', '1', '--freeze-epochs', '1',
                  '--label-smoothing', '0.1', '--tta', '2', '--out', str(tmp_path)])
    logits, target = torch.randn(4, learn.dls.c), torch.tensor([0, 1, 0, 1])
    torch.testing.assert_close(learn.loss_func(logits, target),
                               torch.nn.functional.cross_entropy(logits, target, label_smoothing=0.1))
    assert 'tta accuracy' in capsys.readouterr().out
    with pytest.raises(SystemExit):  # argparse: one line naming the option, exit code 2
        main(['--label-smoothing', '1.5'])
    assert '--label-smoothing: 1.5 is not in [0, 1]' in capsys.readouterr().err


def test_the_model_is_exported_before_the_plots_can_fail(pet_folder, tmp_path, monkeypatch):
    """Everything after training that could fail (the interpretation's plots) comes after the export: a
    plot that breaks (as .numpy() of a GPU tensor once did) loses no model."""
    import pets.run

    def broken_plots(*args):
        raise RuntimeError('a plot failed')

    monkeypatch.setattr(pets.run, 'write_results', broken_plots)
    with pytest.raises(RuntimeError, match='a plot failed'):
        main(['--data', str(pet_folder), *SMALL, '--freeze-epochs', '1', '--epochs', '1', '--out', str(tmp_path)])
    assert torch.load(tmp_path / 'model.pth', weights_only=True)['vocab']


def test_crop_ratio_reaches_the_augmentation(pet_folder, tmp_path):
    from pets.run import build_learner, parse_args
    for options, expected in (([], (1.0, 1.0)), (['--crop-ratio', '0.75', '1.25'], (0.75, 1.25))):
        args = parse_args(['--data', str(pet_folder), *SMALL, *options, '--out', str(tmp_path)])
        learn, _, _ = build_learner(args, tmp_path, ())
        assert learn.dls.train.batch_tfms[0].crop_ratio == expected
