"""Simulated users for the unattended loop: a hidden preference and what they do about it.

- :mod:`.preference`: what the users like (concise answers that stop after one
  sentence), as a probability per answer, and the same preference as a judge for
  the offline evaluation (``PREFLOOP_EVAL_JUDGE=prefloop.loop.users.preference:judge``);
- :mod:`.behaviour`: what a user does with one answer (regenerate, copy, continue,
  rate, report, end the session), drawn from a seeded generator with a share of
  random behaviour, so the preference shows in the signals only on average.
"""
