"""The local stack's launchers: part of the top layer, beside ``infra/kafka/pom.xml``.

``kafka_broker`` runs Kafka's KRaft nodes from the jars the pom resolves,
``ray_head`` a local Ray head, ``local_stack`` all of ``prefloop up``/``down``/
``status`` (the broker, the embedded store's owner, Ray, the stream worker, the
router, the verdict loop), ``testing`` the same for tests. Pointed at real
clusters (``PREFLOOP_KAFKA_BOOTSTRAP``, ``PREFLOOP_CLICKHOUSE_URL``, ``RAY_ADDRESS``)
they start nothing. The core reaches a running stack without them
(``prefloop.kafka``, ``prefloop.clickhouse``, ``prefloop.ray_client``).
"""
