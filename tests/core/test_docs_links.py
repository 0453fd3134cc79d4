"""Every relative link in the project's Markdown points at a file or folder that exists."""

import re

from tests.conftest import REPO_ROOT

LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _docs():
    yield from REPO_ROOT.glob("*.md")
    for folder in ("deploy", "scheduler", "adapters"):
        yield from (REPO_ROOT / folder).rglob("*.md")


def test_relative_links_resolve():
    broken = []
    docs = list(_docs())
    assert any(d.name == "planner.md" for d in docs)
    for doc in docs:
        for target in LINK.findall(doc.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            if not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(REPO_ROOT)} -> {target}")
    assert not broken, broken
