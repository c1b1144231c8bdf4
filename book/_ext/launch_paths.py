"""Sphinx hook: point the Binder/Colab launch buttons at the committed notebook, not the executed copy.

The book renders ``book/notebooks/NN_*.ipynb``, which ``make book`` writes and git ignores; the theme
builds launch links from that page name, so they would open a file the repository does not have.
The committed source of each page is ``notebooks/NN_*.ipynb``.
"""

from __future__ import annotations

EXECUTED = "book/notebooks/"
SOURCE = "notebooks/"
LAUNCH_HOSTS = ("mybinder.org", "colab.research.google.com")


def _rewrite(node):
    if isinstance(node, dict):
        url = node.get("url")
        if isinstance(url, str) and any(host in url for host in LAUNCH_HOSTS):
            node["url"] = url.replace(EXECUTED, SOURCE)
        for value in node.values():
            _rewrite(value)
    elif isinstance(node, list):
        for value in node:
            _rewrite(value)


def fix_launch_links(app, pagename, templatename, context, doctree):
    if pagename.startswith(EXECUTED):
        _rewrite(context.get("header_buttons", []))


def setup(app):
    # sphinx-book-theme adds the launch buttons at priority 501; rewrite them after it
    app.connect("html-page-context", fix_launch_links, priority=502)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
