"""minigrad: the math of the pet-breeds chapter, from raw tensor ops.

Read in this order: functional.py (softmax -> log_softmax -> nll -> cross-entropy), optim.py (SGD, Adam),
schedule.py (one-cycle, the learning-rate sweep, discriminative rates). It imports torch and nothing else
of this project.
"""
