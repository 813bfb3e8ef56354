"""pets: the application of the pet-breeds chapter, standing on minigrad's math.

The chapter's code imports everything it needs with `from pets.all import *`.
"""
