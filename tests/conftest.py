"""Test set-up shared by every test: hypothesis profiles.

PETS_HYPOTHESIS_PROFILE picks how hard the property tests search:
  ci (default)  a few dozen examples per property; the whole suite stays fast.
  thorough      thousands of examples per property, for a deliberate hunt (minutes to hours).
"""
import os

from hypothesis import HealthCheck, settings

settings.register_profile('ci', max_examples=30, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile('thorough', max_examples=3000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get('PETS_HYPOTHESIS_PROFILE', 'ci'))
