"""The main job, ``prefloop demo``: the whole loop, unattended (:mod:`.cycle`), and the
staged walk-through of each component (``--tour``, :mod:`.tour`)."""
