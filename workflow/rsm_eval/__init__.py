"""RSM-Eval: content-addressed evaluation of remote-sensing CLIP models.

One module per stage (sources, manifests, models, embeddings, metrics, report) over
a few shared modules (errors, cas, schemas, config). Nothing here imports Snakemake.
"""

__version__ = "0.1.0"
