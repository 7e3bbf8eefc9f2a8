"""The training room: retrain requests into candidate versions that earned their A/B.

``service`` (``prefloop trainer``) turns each RETRAIN_REQUESTED into one Ray job and
records its lifecycle as ModelEvents; ``job`` is that job (read the pairs, train,
evaluate, register); ``pairs`` reads and splits the pairs a request names; ``dpo``
trains with TRL's DPOTrainer, honouring each pair's weight; ``evaluation`` compares a
candidate with its parent offline; ``gates`` holds the product's quality rules;
``config`` the job's hyperparameters; ``offline`` the weekly commands' side
(``prefloop train``, ``eval``, ``gates``). The room imports the core only: it reads
and writes Kafka topics and the model registry, never another room.
"""
