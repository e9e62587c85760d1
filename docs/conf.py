"""Sphinx configuration of wsloop's documentation site (``docs/``).

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html`` (``.ci/run`` does, with
``pip install -e '.[docs]'``). Pages are Markdown (MyST), so that they read on GitHub too; the API
reference is generated from the docstrings by autodoc. Warnings are errors in CI: a broken link to
a page or a heading, an autodoc failure or a docstring that is not valid reStructuredText fails
the build.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The checkout's wsloop, for autodoc (an installed one works too).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import wsloop  # noqa: E402

project = "wsloop"
author = "the wsloop authors"
copyright = "the wsloop authors"
release = version = wsloop.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# MyST: GitHub-style heading anchors (``page.md#a-heading``), so that links work on GitHub and here.
myst_heading_anchors = 4

autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}

html_theme = "furo"
html_title = f"wsloop {release}"
