"""The top layer: what composes the rooms into the running loop.

``cli`` is the ``prefloop`` command, ``autopilot`` the verdict loop that promotes or
rolls back, ``demo`` the main job. This package and the launchers (``prefloop.infra``)
are the only code that imports more than one room; the core (``prefloop``) imports
none, and the rooms (``prefloop.streams``, ``.serving``, ``.training``, ``.analytics``)
import only the core and meet on Kafka topics and in ClickHouse.
"""
