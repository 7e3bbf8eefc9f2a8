"""prefloop's plumbing core: what every room shares.

Settings (``settings``), errors (``errors``), Kafka (``kafka``), ClickHouse
(``clickhouse``) and Ray (``ray_client``) plumbing, the model registry
(``model_registry``), process and port helpers (``process``), tiny offline models
(``tiny_model``) and test helpers that start nothing (``testing``). The core imports
no room (``prefloop.streams``, ``.serving``, ``.training``, ``.analytics``) and no
part of the top layer (``prefloop.loop``, ``prefloop.infra``);
``tests/unit/test_layers.py`` keeps it so.
"""
