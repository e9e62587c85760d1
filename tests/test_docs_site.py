"""The documentation site in ``docs/``: it builds with warnings as errors (as ``.ci/run`` builds
it), a broken link fails that build, every link between its pages resolves to a page and an
anchor that exist, the front page and a guide are there, and the API reference lists
``WebSocket``. The README, now the front page, keeps the two commands first and links only to
files that exist."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from tests.support.components import require_module

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
HOW = "pip install -e '.[docs]'"

for _name in ("sphinx", "myst_parser", "furo"):
    require_module(_name, HOW)


def sphinx_build(source: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """``sphinx-build -W`` of ``source`` into ``out`` (fresh: no cached environment)."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            "-d",
            str(out / ".doctrees"),
            str(source),
            str(out / "html"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = sphinx_build(DOCS, out)
    assert result.returncode == 0, f"sphinx-build -W failed:\n{result.stdout}\n{result.stderr}"
    return out / "html"


class Links(HTMLParser):
    """The ``href`` of every ``<a>`` and ``<link>`` and every ``id``/``name`` of one page."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag in ("a", "link") and found.get("href"):
            self.hrefs.append(found["href"] or "")
        for key in ("id", "name"):
            if found.get(key):
                self.ids.add(found[key] or "")


def parse(page: Path) -> Links:
    parser = Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def test_index_and_a_guide_exist(site: Path) -> None:
    index = site / "index.html"
    guide = site / "servers" / "standalone.html"
    assert index.is_file() and guide.is_file()
    hrefs = parse(index).hrefs
    for page in (
        "quickstart.html",
        "servers/standalone.html",
        "api.html",
        "ARCHITECTURE.html",
        "limits.html",
        "metrics.html",
        "performance.html",
        "porting.html",
        "changelog.html",
    ):
        assert page in hrefs, f"the index does not link to {page}"
    text = guide.read_text(encoding="utf-8")
    assert "Standalone" in text and "WebSocketServer" in text and "Pollers" in text


def test_every_internal_link_resolves(site: Path) -> None:
    pages = {page: parse(page) for page in site.rglob("*.html")}
    checked = 0
    broken: list[str] = []
    for page, links in pages.items():
        for href in links.hrefs:
            parts = urlsplit(href)
            if parts.scheme or parts.netloc or href.startswith("mailto:"):
                continue
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            where = f"{page.relative_to(site)}: {href}"
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                broken.append(f"{where} (no such file)")
                continue
            if parts.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else parse(target).ids
                if unquote(parts.fragment) not in ids:
                    broken.append(f"{where} (no such anchor)")
                    continue
            checked += 1
    assert not broken, "broken links:\n" + "\n".join(broken)
    # Enough links were looked at for the check to mean something: the page-to-page ones of
    # the guides (to headings too), the table of contents and the API reference.
    assert checked > 500, checked


def test_api_page_lists_websocket(site: Path) -> None:
    api = parse(site / "api.html")
    for name in (
        "wsloop.websocket.WebSocket",
        "wsloop.websocket.WebSocket.send",
        "wsloop.servers.standalone.WebSocketServer",
        "wsloop.client.WebSocketClient",
        "wsloop.poller.Reactor",
        "wsloop.messaging.TextMessage",
        "wsloop.exc.HandshakeRejected",
    ):
        assert name in api.ids, f"the API reference does not document {name}"
    text = (site / "api.html").read_text(encoding="utf-8")
    # autodoc's output was rendered, not shown as reStructuredText source.
    assert ".. py:class::" not in text and ":param " not in text


def minimal_site(root: Path, page: str) -> Path:
    source = root / "docs"
    source.mkdir(parents=True)
    shutil.copy(DOCS / "conf.py", source / "conf.py")
    (source / "index.md").write_text(page, encoding="utf-8")
    (source / "api.md").write_text("# Other page\n\n## A heading\n", encoding="utf-8")
    return source


def test_a_broken_reference_fails_the_build(tmp_path: Path) -> None:
    good = "# Site\n\n[other](api.md), [a heading](api.md#a-heading)\n\n```{toctree}\napi\n```\n"
    ok = sphinx_build(minimal_site(tmp_path / "good", good), tmp_path / "good")
    assert ok.returncode == 0, ok.stderr
    for link in ("[gone](nowhere.md)", "[gone](api.md#no-such-heading)"):
        where = tmp_path / re.sub(r"\W+", "-", link)
        where.mkdir()
        failed = sphinx_build(minimal_site(where, good + f"\n{link}\n"), where)
        assert failed.returncode != 0, f"{link}: built with -W anyway"
        assert "nowhere.md" in failed.stderr or "no-such-heading" in failed.stderr, failed.stderr


def test_readme_is_the_front_page() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    commands = [line.strip() for line in readme.splitlines() if line.startswith("    ")][:2]
    assert commands == [
        "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/python -m wsloop serve",
        "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest",
    ]
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    local = [link for link in links if not urlsplit(link).scheme]
    assert "docs/index.md" in local and "docs/quickstart.md" in local
    missing = [link for link in local if not (REPO / link).exists()]
    assert not missing, missing
