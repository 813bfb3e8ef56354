"""Metrics: numbers that say how well the model does, reported each epoch; not used to train.

    learn = cnn_learner(dls, resnet34, metrics=[error_rate, accuracy])

Each takes the model's outputs (N, C) (scores or probabilities: only their order matters) and the targets
(N,) and returns a number.
"""


def error_rate(predictions, targets):
    """The share of samples whose highest-scoring class is not the target: 1 - accuracy."""
    return 1 - accuracy(predictions, targets)


def accuracy(predictions, targets):
    """The share of samples whose highest-scoring class is the target."""
    return (predictions.argmax(dim=1) == targets).float().mean()


def top_k_accuracy(predictions, targets, k=5):
    """The share of samples whose target is among the k highest-scoring classes."""
    top = predictions.topk(min(k, predictions.shape[1]), dim=1).indices
    return (top == targets[:, None]).any(dim=1).float().mean()
