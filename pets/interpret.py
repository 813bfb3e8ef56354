"""Looking at what the model gets wrong: the confusion matrix, the most confused pairs, the top losses.

    interp = ClassificationInterpretation.from_learner(learn)
    interp.most_confused(min_val=2)       # [('staffordshire_bull_terrier', 'american_pit_bull_terrier', 3), ...]
    interp.plot_confusion_matrix(figsize=(12, 12), dpi=60)
    learn.show_results()                  # validation images titled actual / predicted

Each row keeps its item (the image file), carried through the loader with the prediction: a file that
could not be read has no row, and the rows after it still show their own images.
"""
import torch

from pets.data.show import show_images
from pets.inference import prediction_loader, predictions


class ClassificationInterpretation:
    """Predictions, targets and per-sample losses of one data set (on the CPU), the item of each row (by
    default dl's items, one row each), and views of them."""

    def __init__(self, learn, dl, probabilities, targets, losses, items=None):
        self.learn, self.dl, self.vocab = learn, dl, learn.dls.vocab
        self.probabilities, self.targets, self.losses = probabilities, targets, losses
        self.items = list(items) if items is not None else list(dl.items)
        self.predictions = probabilities.argmax(dim=1)

    @classmethod
    def from_learner(cls, learn, ds_idx=1, dl=None, act=None):
        """Runs the learner over data set ds_idx (1: validation) or dl: every item in order, none dropped
        (fastai's dls[ds_idx].new(shuffle=False, drop_last=False)); act: the activation of the outputs
        (default: the loss's, pets.inference.activation)."""
        dl = prediction_loader(learn, ds_idx, dl)
        result = predictions(learn, dl, with_loss=True, act=act)
        items = [dl.items[i] for i in result.positions.tolist()]
        return cls(learn, dl, result.probabilities, result.targets, result.losses, items)

    def confusion_matrix(self):
        """C x C counts: row = actual class, column = predicted class."""
        n = len(self.vocab)
        return torch.bincount(self.targets * n + self.predictions, minlength=n * n).reshape(n, n)

    def most_confused(self, min_val=1):
        """(actual, predicted, count) for every off-diagonal cell with count >= min_val, largest first."""
        matrix = self.confusion_matrix()
        pairs = [(self.vocab[a], self.vocab[p], int(matrix[a, p]))
                 for a in range(len(self.vocab)) for p in range(len(self.vocab))
                 if a != p and matrix[a, p] >= min_val]
        return sorted(pairs, key=lambda pair: -pair[2])

    def top_losses(self, k=None):
        """(losses, indices) of the k samples with the highest loss, highest first."""
        return self.losses.topk(min(k or len(self.losses), len(self.losses)))

    def plot_confusion_matrix(self, figsize=(12, 12), dpi=60, cmap='Blues'):
        """The confusion matrix as a labelled heat map with its counts."""
        import matplotlib.pyplot as plt
        matrix = self.confusion_matrix()
        figure, axis = plt.subplots(figsize=figsize, dpi=dpi)
        axis.imshow(matrix.numpy(), cmap=cmap)
        ticks = range(len(self.vocab))
        axis.set_xticks(ticks, self.vocab, rotation=90)
        axis.set_yticks(ticks, self.vocab)
        for (a, p), count in zip(((a, p) for a in ticks for p in ticks), matrix.flatten().tolist()):
            if count:
                axis.text(p, a, count, ha='center', va='center',
                          color='white' if count > matrix.max() / 2 else 'black')
        axis.set_xlabel('Predicted')
        axis.set_ylabel('Actual')
        axis.set_title('Confusion matrix')
        figure.tight_layout()
        return figure

    def plot_top_losses(self, k=9, nrows=None):
        """The k images with the highest loss, titled as fastai titles them: predicted / actual, then the
        loss / the probability of the prediction (the two names on lines of their own, so that long breed
        names fit)."""
        losses, rows = self.top_losses(k)
        items = [self.items[i] for i in rows.tolist()]
        test = self.learn.dls.test_dl(items, bs=len(items))
        images = test.decode(test.one_batch())
        titles = [f"{self.vocab[int(self.predictions[i])]} /\n{self.vocab[int(self.targets[i])]}\n"
                  f"{float(loss):.2f} / {float(self.probabilities[i].max()):.2f}"
                  for loss, i in zip(losses, rows.tolist())]
        return show_images(images, titles, nrows=nrows, ncols=min(3, len(items)), fontsize=9)


def show_results(learn, ds_idx=1, dl=None, max_n=9, nrows=None, ncols=3, figsize=None):
    """fastai's learn.show_results: the first max_n images of data set ds_idx (1: validation) or of dl, each
    titled with its actual and predicted label, green where the prediction is right, red where it is wrong."""
    dataset = (dl if dl is not None else learn.dls[ds_idx]).dataset
    test = learn.dls.test_dl(dataset.items[:max_n], bs=max_n)
    result = predictions(learn, test)  # an unreadable file has no row: each row says which item it is
    targets = [dataset.targets[i] for i in result.positions.tolist()]
    predicted = result.probabilities.argmax(dim=1).tolist()
    vocab = learn.dls.vocab
    titles = [f"{vocab[t]}\n{vocab[p]}" for t, p in zip(targets, predicted)]
    colors = ['green' if t == p else 'red' for t, p in zip(targets, predicted)]
    images = test.decode(test.one_batch())
    return show_images(images, titles, nrows=nrows, ncols=min(ncols, len(targets)), figsize=figsize,
                       colors=colors, fontsize=9)
