"""The HTML report: self-contained, complete for a compare directory, honest about what is
missing, written by ``cellstate compare`` and ``cellstate report``, and loadable in a browser."""

import base64
import io
import json
import re
import shutil
import subprocess
from html import escape
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image
import pytest

from cellstate.cli.main import main
from cellstate.report.html import SECTIONS, write_report

CHROMIUM = Path("/usr/bin/chromium")


class Tags(HTMLParser):
    """Every start tag and its attributes."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def parse(page: str) -> list[tuple[str, dict]]:
    parser = Tags()
    parser.feed(page)
    return parser.tags


def sections(page: str) -> dict[str, str]:
    """Section title -> its HTML."""
    found = re.findall(r'<section id="s\d+"><h2>(.*?)</h2>(.*?)</section>', page, re.S)
    return {title: body for title, body in found}


def test_compare_writes_the_report_and_prints_its_path(compare_dir):
    out, printed = compare_dir
    assert (out / "report.html").is_file()
    assert str(out / "report.html") in printed


def test_report_is_self_contained(compare_dir):
    page = (compare_dir[0] / "report.html").read_text()
    tags = parse(page)
    images = [attrs for tag, attrs in tags if tag == "img"]
    assert len(images) >= 6
    for tag, attrs in tags:
        assert tag not in ("script", "link", "iframe", "object", "embed"), tag
        for name in ("src", "href"):
            value = attrs.get(name) or ""
            assert not re.match(r"(https?:)?//", value), f"<{tag} {name}={value[:60]}>"
            if name == "href" and value:
                assert value.startswith("#"), f"<{tag} href={value[:60]}> leaves the page"
    assert "@import" not in page and "url(" not in page
    for attrs in images:
        assert attrs["src"].startswith("data:image/png;base64,")
        png = base64.b64decode(attrs["src"].split(",", 1)[1], validate=True)
        assert matplotlib.image.imread(io.BytesIO(png), format="png").shape[0] > 100
        assert attrs.get("alt")


def test_first_screen_states_the_claim_and_the_answer_beside_the_plot(compare_dir):
    page = (compare_dir[0] / "report.html").read_text()
    summary = json.loads((compare_dir[0] / "compare.json").read_text())
    first = page[: page.index("<nav>")]
    assert escape(summary["claim"]) in first and escape(summary["answer"]) in first
    assert '<div class="headline">' in first and "<img" in first
    assert "CPU kernel" in first and "start-up" in first


def test_compare_report_has_every_piece(compare_dir):
    body = sections((compare_dir[0] / "report.html").read_text())
    assert list(body) == [title for title, _ in SECTIONS]
    for title, html in body.items():
        assert "not available" not in html, title
        assert "<img" in html, title
    assert "lstm trained: dL/dc" in body["Gradient flow: the vanishing gradient"]
    assert "<table>" in body["Comparison"]


def test_missing_pieces_say_why(tmp_path, compare_dir):
    # One run without its checkpoint, one with a damaged one; no compare.json.
    for name in ("rnn-T11", "lstm-T11"):
        shutil.copytree(compare_dir[0] / name, tmp_path / name)
    (tmp_path / "rnn-T11" / "checkpoint.pt").unlink()
    (tmp_path / "lstm-T11" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    body = sections(write_report(tmp_path).read_text())
    assert "<img" in body["Learning curves"] and "<table>" in body["Learning curves"]
    assert "not available: no compare.json" in body["Comparison"]
    assert "not available: ValueError" in body["Gradient flow: the vanishing gradient"]
    assert "not available: ValueError" in body["Inside the LSTM: gates and cell state"]
    assert "not a readable cellstate checkpoint" in body["Inside the LSTM: gates and cell state"]
    # The exploding and clipping demos need no run: they are there regardless.
    assert body["Exploding gradients and clipping"].count("<img") == 2


def test_empty_directory(tmp_path):
    """No run at all: an error naming the directory, not a page of "not available"."""
    with pytest.raises(ValueError, match="expected a cellstate run"):
        write_report(tmp_path)
    assert not (tmp_path / "report.html").exists()


def test_report_command(tmp_path, capsys, compare_dir):
    run = tmp_path / "run"
    shutil.copytree(compare_dir[0] / "lstm-T12", run)
    assert main(["report", str(run)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {run / 'report.html'}"
    body = sections((run / "report.html").read_text())
    assert "lstm trained" in body["Gradient flow: the vanishing gradient"]
    assert json.loads((run / "result.json").read_text())["task"] in body["Learning curves"]
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "no run directory" in capsys.readouterr().err


# After the load event, write each image's decoded size into the page for --dump-dom to show.
CHECK = (
    '<script>addEventListener("load", () => { const p = document.createElement("pre"); '
    'p.id = "image-check"; p.textContent = Array.from(document.images, '
    'i => i.complete + ":" + i.naturalWidth + "x" + i.naturalHeight).join(" "); '
    "document.body.appendChild(p); });</script>"
)


def test_page_loads_in_headless_chromium_with_every_image_decoded(compare_dir, tmp_path):
    if not CHROMIUM.is_file():
        reason = f"{CHROMIUM} not found: install the Debian package (apt-get install -y chromium)"
        print(reason)
        pytest.skip(reason)
    page = (compare_dir[0] / "report.html").read_text()
    checked = tmp_path / "checked.html"
    checked.write_text(page.replace("</body>", CHECK + "</body>"))
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        checked.as_uri(),
    ]
    dom = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout
    found = re.search(r'<pre id="image-check">([^<]*)</pre>', dom)
    assert found, f"the page's load handler did not run; chromium printed {dom[:300]!r}"
    images = found.group(1).split()
    assert len(images) == page.count("<img ")
    for image in images:
        complete, size = image.split(":")
        width, height = map(int, size.split("x"))
        assert complete == "true" and width > 100 and height > 100, image
