"""The attention explorer (``s2s-explore``): type a sentence, see each run's translation and attention side by side.

* `views`: what the page shows, as JSON-ready dicts, computed from trained runs (`ExplorerRun`): a translation
  with its attention (per head for multi-head attention), the beam's hypotheses at every step, the attention of
  the same sentence at each step checkpoint, and gold word alignments with the attention's links over them.
* `server`: a small local web server (the standard library's) that answers the page's requests.
* `export`: the same page as one self-contained HTML file for a list of sentences, to open without a server.
* ``page/``: the page itself (HTML, CSS and plain JavaScript; nothing fetched from the network).
"""

from .views import ExplorerError, ExplorerRun, GoldSet

__all__ = ["ExplorerError", "ExplorerRun", "GoldSet"]
