"""ferwild: facial expression recognition in the wild.

The package reads as the pipeline: ``ferwild.data`` (sources -> faces -> cache -> split ->
dedup -> balance, orchestrated by ``ferwild.data.prepare``), then models, training, study,
audit and serving. Imports point one way, from data towards serving.
"""

__version__ = "0.1.0"
