"""minigrad: the math of the pet-breeds chapter, from raw tensor ops.

Start with README.md (the chapter's cross-entropy, step by step, with the book's numbers), then read the
files in this order: functional.py (softmax -> log_softmax -> nll_loss -> cross_entropy, then their options
and the two-class case), sampling.py (grid_sample from gathers, the padding rules), homographies.py (the
3x3 matrices of augmentation), warp.py (a batch through them, resampled once, antialiased),
warp_triton.py (the same warp as a hand-written GPU kernel), optim.py (SGD, Adam) and schedule.py
(one-cycle, the learning-rate sweep, discriminative rates). It imports torch (and triton, in
warp_triton.py only) and nothing else of this project.
"""
