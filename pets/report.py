"""What pets.run reports besides the epoch table: the files it left out, the results it writes.

    report = LeftOutReport(out / 'left_out.txt', left_out)    # a learner callback
    write_results(out, learn, interp, dls)                     # history.csv, history.md and the plots
"""
import csv
from pathlib import Path

from pets.distributed import all_gather


class LeftOutReport:
    """Callback: prints each file left out once, in one line, and keeps out/left_out.txt up to date."""

    def __init__(self, path, left_out):
        self.path, self.left_out, self.printed = Path(path), dict(left_out), set()

    def update(self, learn):
        for skipped in all_gather(learn.dls.skipped):  # each process decodes its own shard
            self.left_out.update({Path(f): reason for f, reason in skipped.items()})
        if not learn.is_main_process:
            return
        for f in sorted(set(self.left_out) - self.printed):
            print(f"left out {self.left_out[f]}")
        self.printed |= set(self.left_out)
        self.path.write_text(''.join(f"{f}\t{self.left_out[f]}\n" for f in sorted(self.left_out)))

    before_fit = after_epoch = after_fit = update


def save_figure(figure, path):
    import matplotlib.pyplot as plt
    figure.savefig(path)
    plt.close(figure)


def write_results(out, learn, interp, dls):
    """The epoch table (CSV and Markdown) and the plots, into the folder `out`."""
    header, rows = learn.recorder.header[1:-1], learn.recorder.values
    with open(out / 'history.csv', 'w', newline='') as file:
        writer = csv.writer(file)
        writer.writerow(['epoch', *header])
        writer.writerows([i, *row] for i, row in enumerate(rows))
    lines = ['| epoch | ' + ' | '.join(header) + ' |', '|' + '---|' * (len(header) + 1)]
    lines += [f"| {i} | " + ' | '.join(f"{v:.6f}" for v in row) + ' |' for i, row in enumerate(rows)]
    (out / 'history.md').write_text('\n'.join(lines) + '\n')
    figures = {'loss': learn.recorder.plot_loss(), 'schedule': learn.recorder.plot_sched(),
               'confusion_matrix': interp.plot_confusion_matrix(), 'top_losses': interp.plot_top_losses(9),
               'batch': dls.show_batch()}
    for name, figure in figures.items():
        save_figure(figure, out / f"{name}.png")
    print(f"wrote {out}/: history.csv, history.md, " + ', '.join(f"{name}.png" for name in figures))
