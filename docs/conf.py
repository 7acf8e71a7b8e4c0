"""Sphinx configuration for convmat.

Build (offline, warnings are errors):

    sphinx-build -W --keep-going -b html docs docs/_build/html

Why Sphinx + numpydoc + sphinx-gallery (see also ``index.rst``): convmat's
docstrings are numpydoc, so numpydoc renders them as written; sphinx-gallery
*executes* every ``examples/plot_*.py`` on each build, so a broken example
breaks the docs build instead of silently rotting; autodoc/autosummary
generate the API reference from the docstrings themselves.
"""

import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # the package, also when it is not installed

import convmat  # noqa: E402

project = "convmat"
author = "the convmat authors"
copyright = "the convmat authors"
release = convmat.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

# Offline build: no intersphinx (it would fetch inventories).
templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "auto_examples/*.ipynb", "auto_examples/*.py",
                    "auto_examples/*.zip"]
source_suffix = {".rst": "restructuredtext"}
root_doc = "index"

# -- autodoc / autosummary / numpydoc ---------------------------------------
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "none"  # the numpydoc type lines say it better
numpydoc_show_class_members = False  # members are listed by autodoc, not as stub tables
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks = set()

# -- sphinx-gallery ----------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    # Execute the gallery scripts (plot_*.py) only ...
    "filename_pattern": "/plot_",
    # ... and leave the command-line scripts (demo.py, least_squares.py: argparse programs
    # with --out, run by `make demo` and tests/test_examples.py) out of the gallery.
    # (sphinx-gallery matches this against the bare file name.)
    "ignore_pattern": r"^(?!plot_).*\.py$",
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "min_reported_time": 1,
    # No execution-time pages: their tables load jQuery and DataTables from a CDN.
    "write_computation_times": False,
    "show_memory": False,
    "plot_gallery": "True",
    "abort_on_example_error": False,
    "only_warn_on_example_error": False,
}

# -- HTML ----------------------------------------------------------------------
try:
    import pydata_sphinx_theme  # noqa: F401

    html_theme = "pydata_sphinx_theme"
    html_theme_options = {"navigation_depth": 2, "show_toc_level": 2}
    # Without a default colour mode the theme's script logs an error on a reader's first visit.
    html_context = {"default_mode": "auto"}
    # The pages are navigated from the header; without the left sidebar the article is wide
    # enough at 1280 px for every table and code block (docs/check_pages.py checks it).
    html_sidebars = {"**": []}
except ImportError:  # pragma: no cover - the default theme still builds
    html_theme = "alabaster"
html_title = f"convmat {release}"
html_static_path = ["_static"]
html_css_files = ["convmat.css"]
html_favicon = "_static/favicon.svg"


# -- MathJax, served with the pages ---------------------------------------------
# The pages must work offline (and docs/check_pages.py fails on a request that
# cannot be served), so MathJax 3 comes from the ``django-static-mathjax``
# wheel of the docs extra (the MathJax files only, no Django) and is copied
# next to the pages: the combined TeX component, its input extensions and
# output fonts.
def _local_mathjax():
    import importlib.util

    spec = importlib.util.find_spec("mathjax")
    if spec is None or spec.origin is None:
        return None
    es5 = Path(spec.origin).parent / "static" / "mathjax" / "es5"
    return es5 if (es5 / "tex-mml-chtml.js").is_file() else None


MATHJAX = _local_mathjax()
if MATHJAX is not None:
    mathjax_path = "mathjax/tex-mml-chtml.js"  # relative to _static


def _copy_mathjax(app, exception):
    if exception is not None or MATHJAX is None or app.builder.format != "html":
        return
    import shutil

    dest = Path(app.outdir) / "_static" / "mathjax"
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(MATHJAX / "tex-mml-chtml.js", dest / "tex-mml-chtml.js")
    for part in ("input", "output", "ui", "a11y"):
        if (MATHJAX / part).is_dir():
            shutil.copytree(MATHJAX / part, dest / part, dirs_exist_ok=True)
html_show_sourcelink = False


# -- docstring shapes ----------------------------------------------------------
# convmat's numpydoc type lines spell shapes as PyTorch does, ``(N, C, *spatial)``
# (see STYLE.md); in reStructuredText a bare ``*word`` opens emphasis.  Escape
# such stars on the name/type lines of the numpydoc sections (not in the
# descriptions, which use literals), before numpydoc turns the docstring into rst.
import re  # noqa: E402

_TYPED_SECTIONS = {"Parameters", "Returns", "Yields", "Receives", "Other Parameters", "Attributes", "Raises",
                   "Warns"}
_BARE_STAR = re.compile(r"(?<![\\`*\w])\*(?=[A-Za-z_(])")


def _escape_shape_stars(app, what, name, obj, options, lines):
    section = None
    for i, line in enumerate(lines):
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if nxt.strip() and set(nxt.strip()) == {"-"} and line.strip():
            section = line.strip()
            continue
        if section in _TYPED_SECTIONS and line and not line[0].isspace():
            lines[i] = _BARE_STAR.sub(r"\\*", line)


def _mark_source_pages(app, pagename, templatename, context, doctree):
    """The viewcode source pages get the class ``convmat-source`` (their long lines wrap, see convmat.css)."""
    if pagename.startswith("_modules/") and "body" in context:
        context["body"] = context["body"].replace('<div class="highlight">', '<div class="highlight convmat-source">')


def setup(app):
    app.connect("autodoc-process-docstring", _escape_shape_stars, priority=400)
    app.connect("html-page-context", _mark_source_pages)
    app.connect("build-finished", _copy_mathjax)
