"""minigrad: the math of the pet-breeds chapter, from raw tensor ops.

Read in this order: functional.py (softmax -> log_softmax -> nll -> cross-entropy), optim.py (SGD, Adam),
schedule.py (one-cycle, the learning-rate sweep, discriminative rates), warp.py (sampling, homographies and
the one-pass warp of augmentation), warp_triton.py (the same warp as a hand-written GPU kernel). It imports
torch (and triton, in warp_triton.py only) and nothing else of this project.
"""
