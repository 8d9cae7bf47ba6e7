"""The README is a landing page and docs/ holds one page per topic: every relative link (and #anchor) resolves, the
README's first screen has the two commands (the test one is what .ci/run runs) and the six tasks' table."""

import itertools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
TASKS = ("text-to-image", "text-to-video", "image-to-video", "image editing", "video editing", "in-context video")


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = page.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # a '#' in a code block is no heading
    found = {slug(m) for m in re.findall(r"^#+ (.+)$", text, flags=re.M)}
    return found | set(re.findall(r'<a id="([^"]+)"', text))


def relative_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


def test_slug_is_githubs():
    assert slug("Video: scripts/train_video.sh") == "video-scriptstrain_videosh"
    assert slug("The FLUX.1-Kontext backbone") == "the-flux1-kontext-backbone"


def test_readme_first_screen_has_the_two_commands_and_the_task_table():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()[-1]
    table = readme.index("| task | backbone")
    assert readme.index(ci) < table, "the README's test command must be .ci/run's, above the task table"
    demo = "bash scripts/setup.sh && .venv/bin/python -m metacanvas_core generate --prompt"
    assert readme.index(demo) < table
    assert table < len(readme) // 3, "the task table belongs on the README's first screen"
    rows = list(itertools.takewhile(lambda line: line.startswith("|"), readme[table:].splitlines()[2:]))
    assert [r.split("|")[1].strip() for r in rows] == list(TASKS)
    for row in rows:
        assert re.search(r"\]\(docs/[\w-]+\.md", row), f"no docs page linked: {row[:60]}"


def test_every_docs_page_is_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    unlinked = [p.name for p in PAGES[1:] if f"](docs/{p.name}" not in readme]
    assert not unlinked, f"docs pages the README's Documentation list leaves out: {unlinked}"
